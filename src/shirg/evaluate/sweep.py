"""The budget sweep: every strategy at several budgets K of the high-detail tokens, on the same samples.

`shirg sweep` runs `shirg eval`'s runner once for the reference mode (``reference/``) and once per
budget (``k<K>/``, every strategy at K high-detail tokens), each folder resumable as an eval folder.
This module reads those folders' predictions.jsonl and writes the standard table of the field:
per strategy and budget the visual tokens, the score with its 95 % interval, the paired difference
against the reference on the same samples (interval, exact McNemar p), evidence recall and the share
of questions whose queried number's patch is kept at full detail; and one plot of score against
visual tokens, one line per strategy with its interval band.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Sequence
from pathlib import Path

from shirg.errors import ConfigError
from shirg.evaluate import stats
from shirg.evaluate.data import load_samples, task_spec
from shirg.evaluate.modes import build_modes
from shirg.evaluate.runner import EvalSettings, evaluate, machine_info, sample_evidence
from shirg.evaluate.summary import SCORE_KEYS
from shirg.io import atomic_write, write_json, write_text
from shirg.model.visual import encode_for, selection_for
from shirg.tokens.dual_scale import scaffold_size

REFERENCE_DIR = "reference"
__all__ = ["EvalSettings", "build_modes", "load_samples", "machine_info", "task_spec"]  # for `shirg sweep`


def budget_dir(k: int) -> str:
    return f"k{k:04d}"


def budget_tokens(percent: float, grid: int) -> int:
    """K high-detail tokens for ``percent`` % of the G x G grid (at least 1)."""
    return max(1, round(percent / 100.0 * grid * grid))


def parse_budgets(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--budgets must be comma-separated percentages, e.g. 5,10,20,33; got {text!r}") from None
    if not values or any(not 0 < v <= 100 for v in values) or len(set(values)) != len(values):
        raise ConfigError(f"--budgets {text!r}: give distinct percentages in (0, 100], e.g. 5,10,20,33")
    return values


def default_metric(task: str) -> str:
    """Reading accuracy on EntityGrid, else the task's first score."""
    return "acc_reading" if task == "entitygrid" else SCORE_KEYS[task][0]


def plan(names: Sequence[str], base, budgets: Sequence[float], grid: int) -> list[dict]:
    """One point per budget: {"percent", "k", "coverage", "modes"}; SHIRG's coverage is off where K is
    below its coverage cells. ``base``: the run's VisualOptions."""
    cover = scaffold_size(grid) ** 2
    points = []
    for pct in budgets:
        k = budget_tokens(pct, grid)
        opts = dataclasses.replace(base, k=k, coverage=base.coverage and k >= cover)
        points.append({"percent": pct, "k": k, "coverage": opts.coverage, "modes": build_modes(list(names), opts)})
    if len({p["k"] for p in points}) != len(points):
        raise ConfigError(f"the budgets {', '.join(f'{b:g}' for b in budgets)} give the same K twice on a "
                          f"{grid} x {grid} grid")
    return points


def swap_questions(samples: Sequence) -> list:
    """A control: sample i asked sample (i + 1)'s question (mod n), with its own image, answers and
    evidence. A gate that follows the question then keeps the queried patch only by chance or by a
    text-free prior; one that ignores the question keeps the same tokens as before."""
    n = len(samples)
    return [dataclasses.replace(smp, question=samples[(i + 1) % n].question) for i, smp in enumerate(samples)]


def select_only(model, samples, folders: dict, settings: EvalSettings, progress: bool = True) -> None:
    """Selection metrics without answering (EntityGrid). ``folders``: {folder: modes}. Per (sample,
    mode) the visual tokens, evidence recall and whether the queried number's patch is kept at full
    detail, from the selection the mode makes for the question the answer would be asked; written as
    each folder's predictions.jsonl (no prediction, no scores). The vision tower runs once per sample
    for every folder; a folder holding every (sample, mode) already is left as it is."""
    todo = {}
    for folder, modes in folders.items():
        wanted = {(smp.id, m.name) for smp in samples for m in modes}
        if not {(r["id"], r["mode"]) for r in _read(Path(folder))} >= wanted:
            todo[Path(folder)] = modes
    if not todo:
        return
    every = [m for modes in todo.values() for m in modes]
    if any(not m.hires for m in every) or len({(m.options.resolution, m.options.resize) for m in every}) > 1:
        raise ConfigError("--selection-only takes high-resolution strategies at one resolution")
    records: dict[Path, list[dict]] = {folder: [] for folder in todo}
    it = samples
    if progress:
        from tqdm import tqdm

        it = tqdm(samples, desc="select", unit="q")
    for smp in it:
        image = smp.image()
        encoded = encode_for(model, image, every[0].options)
        for folder, modes in todo.items():
            for m in modes:
                sel, prep = selection_for(model, image, settings.text(smp.question), m.mode, m.options,
                                          encoded=encoded)
                records[folder].append({
                    "id": smp.id, "mode": m.name, "task": settings.task, "type": smp.qtype,
                    "question": smp.question, "answers": smp.answers, "prediction": None, "scores": {},
                    "visual_tokens": int(sel.features.shape[1]),
                    **sample_evidence(model, image, smp, m, selected=(sel, prep.content_box))})
    for folder, recs in records.items():
        folder.mkdir(parents=True, exist_ok=True)
        write_text(folder / "predictions.jsonl", "".join(json.dumps(r) + "\n" for r in recs))


def run_sweep(model, samples, points: list[dict], reference, out: str | Path, settings: EvalSettings,
              names: Sequence[str], metric: str, progress: bool = True, invocation: dict | None = None,
              selection_only: bool = False) -> dict:
    """Evaluate the reference mode and every point (resumable folders), then collect the table.
    ``selection_only``: no answers; every point's selection metrics (:func:`select_only`)."""
    out = Path(out)
    if selection_only:
        folders = {out / REFERENCE_DIR: reference, **{out / budget_dir(pt["k"]): pt["modes"] for pt in points}}
        select_only(model, samples, folders, settings, progress=progress)
    else:
        evaluate(model, samples, reference, out / REFERENCE_DIR, settings, overlays=0, progress=progress,
                 invocation=invocation)
        for pt in points:
            evaluate(model, samples, pt["modes"], out / budget_dir(pt["k"]), settings, overlays=0,
                     progress=progress, invocation=invocation)
    return collect(out, [{k: v for k, v in pt.items() if k != "modes"} for pt in points], names, metric,
                   settings.reference or "full")


def _read(folder: Path) -> list[dict]:
    path = folder / "predictions.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _metric_value(rec: dict, metric: str):
    if metric.startswith("acc_"):
        return rec["scores"].get("accuracy") if rec.get("type") == metric[4:] else None
    if metric in ("evidence_recall", "queried_patch_kept", "twin_patch_kept"):
        return rec.get(metric)
    return rec["scores"].get(metric)


def collect(out: str | Path, points: Sequence[dict], strategies: Sequence[str], metric: str,
            reference: str = "full") -> dict:
    """The sweep's table from its folders. ``points``: [{"percent", "k", "coverage"}] in budget order."""
    out = Path(out)
    ref_recs = {r["id"]: r for r in _read(out / REFERENCE_DIR) if r.get("mode") == reference}
    rows = []
    ids_all: set[str] | None = None
    per_point = []
    for pt in points:
        recs = _read(out / budget_dir(pt["k"]))
        by = {s: {r["id"]: r for r in recs if r.get("mode") == s} for s in strategies}
        per_point.append(by)
        for s in strategies:
            ids = set(by[s]) & set(ref_recs)
            ids_all = ids if ids_all is None else ids_all & ids
    ids = sorted(ids_all or set())
    ref_values = [_metric_value(ref_recs[i], metric) for i in ids]
    ref_iv = stats.in_percent({"intervals": {reference: {metric: stats.interval(ref_values)}}, "paired": {}})
    reference_row = {"mode": reference, "metric": metric, "n": len(ids),
                     "visual_tokens": _mean([ref_recs[i]["visual_tokens"] for i in ids]),
                     "score": ref_iv["intervals"][reference][metric]}
    for pt, by in zip(points, per_point, strict=True):
        for s in strategies:
            recs = [by[s][i] for i in ids]
            values = [_metric_value(r, metric) for r in recs]
            compared = stats.in_percent({
                "intervals": {s: {metric: stats.interval(values),
                                  "evidence_recall": stats.interval([r.get("evidence_recall") for r in recs]),
                                  "queried_patch_kept": stats.interval([r.get("queried_patch_kept") for r in recs])}},
                "paired": {s: {metric: stats.paired(values, ref_values)}}})
            iv = compared["intervals"][s]
            rows.append({"strategy": s, "percent": pt["percent"], "k": pt["k"], "coverage": pt["coverage"],
                         "visual_tokens": _mean([r["visual_tokens"] for r in recs]), "n": len(recs),
                         "score": iv[metric], "vs_reference": compared["paired"][s][metric],
                         "evidence_recall": iv["evidence_recall"], "queried_patch_kept": iv["queried_patch_kept"]})
    return {"metric": metric, "reference": reference_row, "samples": len(ids), "strategies": list(strategies),
            "points": list(points), "rows": rows, "unit": "percent", "confidence": 95}


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


# ----------------------------------------------------------------------------- outputs


def markdown(table: dict, grid_tokens: int) -> str:
    ref = table["reference"]
    m = table["metric"]
    lines = [f"# Budget sweep: `{m}` against visual tokens", "",
             f"{table['samples']} samples answered by every strategy at every budget and by `{ref['mode']}`; "
             f"K = high-detail tokens kept of the {grid_tokens} of the grid; visual tokens = what the LM sees "
             "(K plus scaffold). Scores in %, each with its 95 % interval (Wilson); the difference against "
             f"`{ref['mode']}` is paired on the same samples (Newcombe's interval, exact McNemar p).", "",
             f"Reference `{ref['mode']}`: {stats.fmt_interval(ref['score'], scale=1.0)} at "
             f"{ref['visual_tokens'] or 0:.0f} visual tokens.", "",
             f"| strategy | K % | K tokens | visual tokens | {m} | vs {ref['mode']} | McNemar p | evidence recall | "
             "kept queried patch |", "|" + "---|" * 9]
    for r in table["rows"]:
        cov = "" if r["coverage"] else " (no coverage)"
        pd = r["vs_reference"]
        lines.append(f"| {r['strategy']} | {r['percent']:g} | {r['k']}{cov} | "
                     f"{r['visual_tokens'] or 0:.0f} | {stats.fmt_interval(r['score'], scale=1.0)} | "
                     f"{stats.fmt_interval(pd, scale=1.0, signed=True)} | {pd.get('p_text', '-')} | "
                     f"{stats.fmt_interval(r['evidence_recall'], scale=1.0)} | "
                     f"{stats.fmt_interval(r['queried_patch_kept'], scale=1.0)} |")
    lines += ["", "- evidence recall: share of the queried entity's high-detail patches kept (merged tokens count "
              "for the patches they cover); kept queried patch: share of questions whose number's centre patch is "
              "kept as an unmerged high-detail token.",
              "- `(no coverage)`: K is below SHIRG's coverage cells, so SHIRG runs without its per-cell guarantee."]
    return "\n".join(lines) + "\n"


def to_csv(table: dict) -> str:
    cols = ["strategy", "percent", "k", "coverage", "visual_tokens", "n", "score", "score_lo", "score_hi", "diff",
            "diff_lo", "diff_hi", "mcnemar_p", "evidence_recall", "queried_patch_kept", "queried_patch_kept_lo",
            "queried_patch_kept_hi"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in table["rows"]:
        w.writerow({"strategy": r["strategy"], "percent": r["percent"], "k": r["k"], "coverage": r["coverage"],
                    "visual_tokens": r["visual_tokens"], "n": r["n"], "score": r["score"]["value"],
                    "score_lo": r["score"]["lo"], "score_hi": r["score"]["hi"], "diff": r["vs_reference"]["diff"],
                    "diff_lo": r["vs_reference"]["lo"], "diff_hi": r["vs_reference"]["hi"],
                    "mcnemar_p": r["vs_reference"]["p"], "evidence_recall": r["evidence_recall"]["value"],
                    "queried_patch_kept": r["queried_patch_kept"]["value"],
                    "queried_patch_kept_lo": r["queried_patch_kept"]["lo"],
                    "queried_patch_kept_hi": r["queried_patch_kept"]["hi"]})
    return buf.getvalue()


def plot(table: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    for s in table["strategies"]:
        rows = sorted((r for r in table["rows"] if r["strategy"] == s and r["score"]["value"] is not None),
                      key=lambda r: r["visual_tokens"] or 0)
        if not rows:
            continue
        x = [r["visual_tokens"] for r in rows]
        line, = ax.plot(x, [r["score"]["value"] for r in rows], marker="o", label=s)
        ax.fill_between(x, [r["score"]["lo"] for r in rows], [r["score"]["hi"] for r in rows],
                        color=line.get_color(), alpha=0.15)
    ref = table["reference"]
    if ref["score"]["value"] is not None:
        ax.axhline(ref["score"]["value"], color="black", lw=1, ls="--",
                   label=f"{ref['mode']} ({ref['visual_tokens'] or 0:.0f} tokens)")
        ax.axhspan(ref["score"]["lo"], ref["score"]["hi"], color="black", alpha=0.07)
    ax.set_xlabel("visual tokens")
    ax.set_ylabel(f"{table['metric']} (%)")
    ax.set_title(f"{table['metric']} vs visual tokens ({table['samples']} samples; bands: 95 % intervals)",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)
    return path


def write(table: dict, out: str | Path, grid_tokens: int) -> list[Path]:
    out = Path(out)
    return [write_json(out / "sweep.json", table), write_text(out / "sweep.md", markdown(table, grid_tokens)),
            write_text(out / "sweep.csv", to_csv(table)), plot(table, out / "sweep.png")]
