"""Per-mode summary of a run: scores, tokens, latency, memory, failures, fallbacks, deltas; tables and plots.

Everything here is computed from the prediction records alone, over the samples that EVERY mode
answered (an interrupted run compares like with like; the table says how many samples that is).
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Sequence
from pathlib import Path

from shirg.evaluate import metrics, stats
from shirg.evaluate.data import task_spec
from shirg.evaluate.evidence import canvas_box
from shirg.io import atomic_write, write_json, write_text
from shirg.model.visual import encode_for, selection_for
from shirg.vision.overlay import draw_overlay

REFERENCES = ("lowres", "full")
CIDER_BACKENDS = {"pycocoevalcap": "pycocoevalcap's CiderScorer (backend `pycocoevalcap`)",
                  "own": "shirg's own implementation of pycocoevalcap's CIDEr-D (backend `own`)",
                  "none": "nothing (no samples; backend `none`)"}
# score keys per task, in table order; all are means of per-sample values x 100 unless noted
SCORE_KEYS = {
    "chartqa": ("relaxed_accuracy", "exact_match"),
    "docvqa": ("anls", "anls_lmms", "exact_match"),
    "textvqa": ("vqa_accuracy", "exact_match"),
    "entitygrid": ("f1", "accuracy"),
}
SCORE_NOTES = {
    "relaxed_accuracy": "ChartQA relaxed accuracy (5 % relative tolerance for numbers, lmms-eval parsing)",
    "exact_match": "exact match after strip, lower case, collapsed spaces",
    "anls": "ANLS, standard definition (divisor: lengths of the normalized strings), threshold 0.5",
    "anls_lmms": "ANLS as lmms-eval computes it (divisor: lengths of the raw strings), threshold 0.5",
    "vqa_accuracy": "VQA accuracy, standard answer normalization, leave-one-out over the 10 answers",
    "f1": "EntityGrid F1 (set F1 for multi-entity position answers, correctness otherwise)",
    "accuracy": "EntityGrid accuracy (exact answer)",
    "cider": "CIDEr-D x 100 over the corpus (pycocoevalcap definition)",
    "relaxed_human": "ChartQA relaxed accuracy on the human-written questions (lmms-eval relaxed_human_split)",
    "relaxed_augmented": "ChartQA relaxed accuracy on the augmented questions (lmms-eval relaxed_augmented_split)",
    "evidence_recall": "share of the queried entity's hi-res patches the selection keeps (mean, x 100)",
    "queried_patch_kept": "share of questions whose queried number's centre patch is kept at full detail",
    "twin_patch_kept": "share of questions (with a shape twin: the queried shape in another colour) where a twin's "
                       "number patch is kept at full detail",
    "twin_answered": "share of reading questions (with a shape twin of another number) answered with the twin's "
                     "number: the error of a reader that ignores colour",
}
# what peak_memory_mb holds, per record memory_kind (runner.record_memory); "peak_rss" is the name older
# runs gave the lifetime peak
MEMORY_NOTES = {
    "peak_gpu": "peak CUDA allocation during each answer (max_memory_allocated, reset per request); "
                "the column is the largest over the mode's answers",
    "request_peak_rss": "peak process RSS sampled while each answer ran (CPU, weights included); "
                        "the column is the largest over the mode's answers",
    "lifetime_peak_rss": "process-lifetime peak RSS (ru_maxrss, CPU) when each answer finished: it never falls, "
                         "so it carries whatever ran earlier in the process and depends on mode order; "
                         "no memory ratios are computed from it",
}
MEMORY_LABELS = {"peak_gpu": "peak CUDA MiB per request", "request_peak_rss": "peak RSS MiB per request (CPU)",
                 "lifetime_peak_rss": "lifetime peak RSS MiB (CPU)"}
ORDER_FREE_MEMORY = ("peak_gpu", "request_peak_rss")


def _memory_kind(recs: Sequence[dict]) -> str | None:
    kinds = {"lifetime_peak_rss" if r.get("memory_kind") == "peak_rss" else r.get("memory_kind")
             for r in recs if r.get("memory_mb") is not None}
    return kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else None)


def memory_description(rows: Sequence[dict]) -> dict:
    """What the peak_memory_mb column is: {"kind", "label", "note"} (kind "mixed" when rows differ)."""
    kinds = {r.get("memory_kind") for r in rows} - {None}
    if not kinds:
        return {"kind": None, "label": "peak memory MiB", "note": "no memory figures recorded"}
    if len(kinds) == 1 and (kind := next(iter(kinds))) in MEMORY_NOTES:
        return {"kind": kind, "label": MEMORY_LABELS[kind], "note": MEMORY_NOTES[kind]}
    per = ", ".join(f"{r['mode']}: {r.get('memory_kind')}" for r in rows)
    return {"kind": "mixed", "label": "peak memory MiB (mixed kinds)",
            "note": f"the modes' memory figures are of different kinds ({per}); they are not comparable "
                    "and no memory ratios are computed"}


def _mean(values: Sequence[float]) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def summarize(records: Sequence[dict], task: str, modes: Sequence[str], reference: str | None = "full") -> dict:
    """Rows per mode (in ``modes`` order) over the samples every listed mode answered; ``stats``: every
    score's 95 % interval and every mode's paired difference against ``reference`` (:mod:`.stats`)."""
    by_mode: dict[str, dict[str, dict]] = {m: {} for m in modes}
    for r in records:
        if r.get("mode") in by_mode:
            by_mode[r["mode"]][r["id"]] = r
    present = [m for m in modes if by_mode[m]]
    common = set.intersection(*(set(by_mode[m]) for m in present)) if present else set()
    order = [r["id"] for r in records if r.get("mode") == (present[0] if present else None) and r["id"] in common]
    keys = SCORE_KEYS[task]
    primary = task_spec(task).primary
    rows = []
    cider_backends: set[str] = set()
    for m in present:
        recs = [by_mode[m][i] for i in order]
        lat = [r["latency_s"] for r in recs if r.get("latency_s") is not None]  # None: a failed answer
        mem = [r["memory_mb"] for r in recs if r.get("memory_mb") is not None]
        row = {"mode": m, "n": len(recs), "answered": len(by_mode[m])}
        for k in keys:
            row[k] = 100.0 * _mean([r["scores"][k] for r in recs]) if recs else None
        if task == "chartqa" and recs:
            # lmms-eval's relaxed_human_split / relaxed_augmented_split (the split LaViDa reports)
            for t in ("human", "augmented"):
                vals = [r["scores"]["relaxed_accuracy"] for r in recs if r.get("type") == t]
                row[f"relaxed_{t}"] = 100.0 * _mean(vals) if vals else None
            cider = metrics.cider_d([r["prediction"] for r in recs], [r["answers"] for r in recs])
            row["cider"] = 100.0 * cider["cider"]
            cider_backends.add(cider["backend"])
        if task == "entitygrid":
            for t in metrics.ENTITYGRID_TYPES:
                vals = [r["scores"]["accuracy"] for r in recs if r.get("type") == t]
                row[f"acc_{t}"] = 100.0 * _mean(vals) if vals else None
            ev = _mean([r.get("evidence_recall") for r in recs])
            row["evidence_recall"] = 100.0 * ev if ev is not None else None
        row |= {
            "visual_tokens": _mean([r.get("visual_tokens") for r in recs]),
            "latency_mean_s": _mean(lat),
            "latency_median_s": statistics.median(lat) if lat else None,
            "peak_memory_mb": max(mem) if mem else None,
            "memory_kind": _memory_kind(recs),
            "fallbacks": sum(1 for r in recs if r.get("fallback")),
            # failed answers (a failed high-resolution pass, an unreadable image, a bad question): empty
            # answers, scored (wrong) with the rest
            "failures": sum(1 for r in recs if r.get("failed")),
        }
        rows.append(row)
    by_name = {r["mode"]: r for r in rows}
    for row in rows:
        for ref in REFERENCES:
            base = by_name.get(ref)
            if base is None:
                continue
            if row[primary] is not None and base[primary] is not None:
                row[f"delta_vs_{ref}"] = row[primary] - base[primary]
            if base["latency_median_s"]:
                row[f"latency_x_{ref}"] = row["latency_median_s"] / base["latency_median_s"]
            comparable = row["memory_kind"] == base["memory_kind"] and base["memory_kind"] in ORDER_FREE_MEMORY
            if base["peak_memory_mb"] and row["peak_memory_mb"] is not None and comparable:
                row[f"memory_x_{ref}"] = row["peak_memory_mb"] / base["peak_memory_mb"]
    missing = {m: len(common) for m in modes if not by_mode[m]}
    incomplete = {m: len(by_mode[m]) for m in present if len(by_mode[m]) != len(common)}
    notes = {k: SCORE_NOTES[k] for k in (*keys, "cider", "evidence_recall") if k in SCORE_NOTES and rows
             and k in rows[0]}
    out = {"task": task, "primary": primary, "samples": len(common), "rows": rows, "score_keys": list(keys),
           "modes_without_answers": sorted(missing), "answered_beyond_common": incomplete, "definitions": notes,
           "memory": memory_description(rows)}
    out["stats"] = stats.in_percent(stats.compare_modes(
        {m: score_values([by_mode[m][i] for i in order], task) for m in present}, reference))
    if cider_backends:
        backend = cider_backends.pop() if len(cider_backends) == 1 else "mixed"
        out["cider_backend"] = backend
        if "cider" in notes:
            notes["cider"] = f"{notes['cider']}; computed by {CIDER_BACKENDS.get(backend, backend)}"
    return out


def score_values(recs: Sequence[dict], task: str) -> dict[str, list]:
    """Per-sample values of every score the summary averages (None where a sample has none)."""
    values = {k: [r["scores"].get(k) for r in recs] for k in SCORE_KEYS[task]}
    if task == "entitygrid":
        for t in metrics.ENTITYGRID_TYPES:
            if any(r.get("type") == t for r in recs):
                values[f"acc_{t}"] = [r["scores"]["accuracy"] if r.get("type") == t else None for r in recs]
        if any(r.get("evidence_recall") is not None for r in recs):
            values["evidence_recall"] = [r.get("evidence_recall") for r in recs]
        for key in ("queried_patch_kept", "twin_patch_kept", "twin_answered"):
            if any(r.get(key) is not None for r in recs):
                values[key] = [r.get(key) for r in recs]
    return values


def stats_markdown(summary: dict) -> list[str]:
    """The intervals table and the paired-differences table of a summary's ``stats``."""
    st = summary.get("stats")
    if not st or not st["intervals"]:
        return []
    modes = list(st["intervals"])
    keys = list(dict.fromkeys(k for m in modes for k in st["intervals"][m]))
    conf = f"{st['confidence']:g} %"
    lines = ["", f"{conf} intervals (Wilson for 0/1 scores, normal for means of partial scores), in %:", "",
             "| mode | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 1)]
    lines += ["| " + " | ".join([m, *(stats.fmt_interval(st["intervals"][m].get(k), scale=1.0) for k in keys)]) + " |"
              for m in modes]
    ref = st.get("reference")
    if not st["paired"]:
        lines += ["", f"No paired differences: the reference mode `{ref}` is not in this run."]
        return lines
    lines += ["", f"Paired differences against `{ref}` on the same samples, in points: difference [{conf} interval] "
              "(Newcombe's paired interval for 0/1 scores, normal for partial scores) and the exact McNemar p:", "",
              "| mode | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 1)]
    for m, per in st["paired"].items():
        cells = []
        for k in keys:
            d = per.get(k)
            text = stats.fmt_interval(d, scale=1.0, signed=True)
            if d and d.get("p") is not None:
                text += f" p={d['p_text']}"
            cells.append(text)
        lines.append("| " + " | ".join([m, *cells]) + " |")
    return lines


def restate(folder: str | Path, summary: dict, reference: str | None) -> dict:
    """``stats`` of a finished eval folder recomputed from its predictions.jsonl against ``reference``
    (the same samples and modes as its summary.json)."""
    import json

    path = Path(folder) / "predictions.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the paired differences need the per-sample predictions")
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    modes = [r["mode"] for r in summary["rows"]]
    return summarize(records, summary["task"], modes, reference)["stats"]


# ----------------------------------------------------------------------------- tables

_FORMATS = {"n": "{:d}", "answered": "{:d}", "fallbacks": "{:d}", "failures": "{:d}", "visual_tokens": "{:.0f}",
            "latency_mean_s": "{:.3f}", "latency_median_s": "{:.3f}", "peak_memory_mb": "{:.0f}"}


def columns(summary: dict) -> list[str]:
    if not summary["rows"]:
        return []
    keys = list(summary["rows"][0])
    extra = [k for r in summary["rows"] for k in r if k not in keys]
    return keys + list(dict.fromkeys(extra))


def _fmt(key: str, value) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if key in _FORMATS:
        return _FORMATS[key].format(int(value) if _FORMATS[key] == "{:d}" else value)
    if key.startswith(("latency_x", "memory_x")):
        return f"{value:.2f}x"
    if key.startswith("delta"):
        return f"{value:+.1f}"
    return f"{value:.1f}"


def markdown(summary: dict, title: str = "") -> str:
    cols = [c for c in columns(summary) if c not in ("memory_kind", "answered")]
    lines = [f"## {title or summary['task']}", "",
             f"{summary['samples']} samples answered by every mode; primary score `{summary['primary']}`; "
             f"deltas in points of `{summary['primary']}`, latency and memory as ratios.", ""]
    if summary["rows"]:
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(_fmt(c, r.get(c)) for c in cols) + " |" for r in summary["rows"]]
        mem = summary.get("memory") or memory_description(summary["rows"])
        lines += ["", f"Memory (`peak_memory_mb`, {mem['label']}): {mem['note']}."]
        if summary.get("cider_backend"):
            lines.append(f"CIDEr backend: `{summary['cider_backend']}`.")
        lines += [*stats_markdown(summary), ""]
    for name, text in summary["definitions"].items():
        lines.append(f"- `{name}`: {text}")
    failed = {r["mode"]: r["failures"] for r in summary["rows"] if r.get("failures")}
    if failed:
        lines.append(f"- failures (no answer; the error is in predictions.jsonl; scored as wrong): {failed}")
    if summary["modes_without_answers"]:
        lines.append(f"- no answers yet for: {', '.join(summary['modes_without_answers'])}")
    if summary["answered_beyond_common"]:
        extra = summary["answered_beyond_common"]
        lines.append(f"- modes with answers outside the common set (run incomplete): {extra}")
    return "\n".join(lines) + "\n"


def to_csv(summary: dict) -> str:
    cols = columns(summary)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in summary["rows"]:
        w.writerow({c: r.get(c) for c in cols})
    return buf.getvalue()


def stats_csv(summary: dict) -> str:
    """One line per mode and score: estimate and interval, and the paired difference against the reference
    (fractions, not percent)."""
    st = summary.get("stats") or {"intervals": {}, "paired": {}, "reference": None}
    cols = ["mode", "metric", "value", "lo", "hi", "n", "method", "reference", "diff", "diff_lo", "diff_hi",
            "mcnemar_p", "paired_method"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for m, per in st["intervals"].items():
        for k, iv in per.items():
            pd = st["paired"].get(m, {}).get(k) or {}
            w.writerow({"mode": m, "metric": k, "value": iv["value"], "lo": iv["lo"], "hi": iv["hi"], "n": iv["n"],
                        "method": iv["method"], "reference": st["reference"] if pd else None, "diff": pd.get("diff"),
                        "diff_lo": pd.get("lo"), "diff_hi": pd.get("hi"), "mcnemar_p": pd.get("p"),
                        "paired_method": pd.get("method")})
    return buf.getvalue()


def write_summary(summary: dict, out: str | Path, title: str = "") -> list[Path]:
    out = Path(out)
    paths = [write_json(out / "summary.json", summary), write_text(out / "summary.md", markdown(summary, title)),
             write_text(out / "summary.csv", to_csv(summary)), write_text(out / "stats.csv", stats_csv(summary))]
    if summary["rows"]:
        paths += plot_tradeoffs(summary, out)
    return paths


# ----------------------------------------------------------------------------- plots


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_tradeoffs(summary: dict, out: Path) -> list[Path]:
    """score_vs_latency.png and score_vs_tokens.png: one labelled point per mode."""
    plt = _plt()
    primary = summary["primary"]
    rows = [r for r in summary["rows"] if r.get(primary) is not None]
    paths = []
    for x_key, x_label, name in (("latency_median_s", "median latency per answer (s)", "score_vs_latency.png"),
                                 ("visual_tokens", "visual tokens", "score_vs_tokens.png")):
        fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
        pts = [(r[x_key], r[primary], r["mode"]) for r in rows if r.get(x_key) is not None]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], color="#007aff")
        for x, y, label in pts:
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel(x_label)
        ax.set_ylabel(f"{primary} (x 100)")
        ax.set_title(f"{summary['task']}: {primary} vs {x_label.split(' (')[0]} ({summary['samples']} samples)",
                     fontsize=9)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        paths.append(atomic_write(out / name, lambda p, fig=fig: fig.savefig(p, format="png")))
        plt.close(fig)
    return paths


def plot_overlays(model, samples, modes, out: Path, records: Sequence[dict], n: int = 3) -> Path | None:
    """A grid of selection overlays: rows = the first ``n`` samples, columns = the high-resolution modes."""
    from matplotlib.patches import Rectangle


    hires = [m for m in modes if m.hires]
    if not hires or n < 1:
        return None
    plt = _plt()
    failed = {r["id"] for r in records if r.get("failed")}  # a sample that could not be answered has no overlay
    rows = [s for s in samples if s.id not in failed][:n]
    if not rows:
        return None
    preds = {(r["mode"], r["id"]): r.get("prediction", "") for r in records}
    fig, axes = plt.subplots(len(rows), len(hires), figsize=(3.2 * len(hires), 3.4 * len(rows)), dpi=100,
                             squeeze=False)
    for i, s in enumerate(rows):
        img = s.image()
        encoded = {}  # (resolution, resize) -> one vision pass, shared by the modes of this sample
        for j, spec in enumerate(hires):
            ax = axes[i][j]
            key = (spec.options.resolution, spec.options.resize)
            if key not in encoded:
                encoded[key] = encode_for(model, img, spec.options)
            sel, prep = selection_for(model, img, s.question, spec.mode, spec.options, encoded[key])
            pred = preds.get((spec.name, s.id), "")
            title = f"{spec.name} [{s.id}]\n{sel.num_tokens} tokens; answer: {pred[:24]!r}"
            draw_overlay(img, sel, 0, None, spec.options.resolution, prep.content_box, title=title, ax=ax)
            for box in s.boxes:  # the queried entities (EntityGrid)
                u0, v0, u1, v1 = canvas_box(box, img.size, prep.content_box)
                ax.add_patch(Rectangle((u0, v0), u1 - u0, v1 - v0, fill=False, edgecolor="#ffcc00", lw=1.2))
            ax.title.set_fontsize(7)
    fig.tight_layout()
    path = atomic_write(out / "overlays.png", lambda p: fig.savefig(p, format="png"))
    plt.close(fig)
    return path
