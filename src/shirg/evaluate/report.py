"""`shirg report`: one Markdown document compiled from what `shirg eval` and `shirg bench` wrote.

Inputs (each a folder a run wrote):
- ``--eval DIR``: ``summary.json`` (required), ``run.json`` (commands, machine, mode options) and the
  plots ``score_vs_latency.png``, ``score_vs_tokens.png``, ``overlays.png`` when present;
- ``--bench DIR``: ``bench.json`` (required) and ``bench.png``;
- ``--analytic DIR``: ``analytic.json`` (required), from ``shirg bench --analytic --out DIR``.

The rule: the report never shows a number that no run produced. (The one exception, stated in the
report where it applies: with ``--reference MODE`` other than the run's, or for a summary.json older
than the intervals, the intervals and paired differences are recomputed from the folder's
predictions.jsonl by the same code `shirg eval` uses.) Every number in it is a value read
from those JSON files, rounded for display and at most converted in unit (seconds to ms, bytes to
MiB or GB); nothing is computed from two values (no new differences, ratios or averages; the deltas
and ratios shown are the ones the runs wrote). Plots are copied next to the report into
``<REPORT>_files/`` and linked relatively, so the folder holding the report is self-contained.
Output is deterministic: the same inputs give the same bytes (no generation time stamp).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from shirg.errors import ShirgError
from shirg.evaluate.modes import ABLATIONS
from shirg.evaluate.summary import restate, stats_markdown
from shirg.io import atomic_write, write_text
from shirg.model.options import reads_question

EVAL_PLOTS = (("score_vs_latency.png", "score vs median latency"), ("score_vs_tokens.png", "score vs visual tokens"),
              ("overlays.png", "selection overlays (kept tokens; yellow boxes: the queried entities)"))
REFERENCES = ("lowres", "full")
MIB, GB = 2**20, 1e9


class ReportError(ShirgError):
    """An input folder is missing or lacks the file a run writes there."""


# ----------------------------------------------------------------------------- inputs


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ReportError(f"{path} is not valid JSON ({e}); rerun the {what} that writes it") from e


def _folder(path: str | Path, flag: str, required: str, writer: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise ReportError(f"{flag} {path} does not exist; pass the --out folder of `{writer}`")
    if not path.is_dir():
        raise ReportError(f"{flag} {path} is not a folder; pass the --out folder of `{writer}`")
    if not (path / required).is_file():
        raise ReportError(f"{flag} {path} holds no {required}; it is not the --out folder of a finished `{writer}` "
                          f"(a run writes {required} when it ends; rerun it to resume)")
    return path


@dataclass
class EvalRun:
    path: Path
    summary: dict
    run: dict | None
    label: str = ""
    restated: bool = False  # stats recomputed from predictions.jsonl (another reference, or an older summary)
    images: list[tuple[str, str, Path]] = field(default_factory=list)  # (caption, copied name, source)

    @property
    def task(self) -> str:
        return self.summary["task"]

    @property
    def primary(self) -> str:
        return self.summary["primary"]


def load_eval(path: str | Path, reference: str | None = None) -> EvalRun:
    path = _folder(path, "--eval", "summary.json", "shirg eval")
    summary = _read_json(path / "summary.json", "shirg eval")
    for key in ("task", "primary", "rows", "samples"):
        if key not in summary:
            raise ReportError(f"{path / 'summary.json'} has no {key!r}; it was not written by `shirg eval`")
    run = _read_json(path / "run.json", "shirg eval") if (path / "run.json").is_file() else None
    ev = EvalRun(path, summary, run)
    current = (summary.get("stats") or {}).get("reference")
    wanted = reference or current or "full"
    if summary.get("stats") is None or wanted != current:
        if reference and reference not in {r["mode"] for r in summary["rows"]}:
            raise ReportError(f"--reference {reference} is not a mode of {path} "
                              f"({', '.join(r['mode'] for r in summary['rows'])})")
        if (path / "predictions.jsonl").is_file():
            summary["stats"] = restate(path, summary, wanted)
            ev.restated = True
    return ev


def load_bench(path: str | Path) -> tuple[Path, dict]:
    path = _folder(path, "--bench", "bench.json", "shirg bench --out DIR")
    bench = _read_json(path / "bench.json", "shirg bench")
    if "rows" not in bench:
        raise ReportError(f"{path / 'bench.json'} has no 'rows'; it was not written by `shirg bench`")
    return path, bench


def load_analytic(path: str | Path) -> tuple[Path, dict]:
    path = _folder(path, "--analytic", "analytic.json", "shirg bench --analytic --out DIR")
    report = _read_json(path / "analytic.json", "shirg bench --analytic")
    if "rows" not in report or "gpu" not in report:
        raise ReportError(f"{path / 'analytic.json'} lacks 'rows' or 'gpu'; it was not written by "
                          "`shirg bench --analytic`")
    return path, report


# ----------------------------------------------------------------------------- formatting


def num(value, digits: int = 1, scale: float = 1.0, sign: bool = False, suffix: str = "") -> str:
    """One value from a run, scaled for its unit only, rounded for display; '-' where the run has none."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    text = f"{value * scale:+.{digits}f}" if sign else f"{value * scale:.{digits}f}"
    return text + suffix


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(_cell(c) for c in r) + " |" for r in rows)]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "run"


def _link(files_dir: str, name: str) -> str:
    return quote(f"{files_dir}/{name}")


def _score_fmt(key: str) -> tuple[int, bool, str]:
    """(digits, signed, suffix) of a summary column, as summary.md shows it."""
    if key.startswith("delta"):
        return 1, True, ""
    if key.startswith(("latency_x", "memory_x")):
        return 2, False, "x"
    if key in ("n", "answered", "fallbacks", "failures", "visual_tokens", "peak_memory_mb"):
        return 0, False, ""
    if key.startswith("latency"):
        return 3, False, ""
    return 1, False, ""


def _fmt_key(row: dict, key: str) -> str:
    digits, signed, suffix = _score_fmt(key)
    return num(row.get(key), digits, sign=signed, suffix=suffix)


# ----------------------------------------------------------------------------- sections


def _invocations(ev: EvalRun) -> list[dict]:
    if ev.run and ev.run.get("invocations"):
        return [i for i in ev.run["invocations"] if i]
    inv = (ev.summary.get("run") or {}).get("invocation")
    return [inv] if inv else []


def _score_columns(ev: EvalRun) -> list[str]:
    rows = ev.summary["rows"]
    keys = list(ev.summary.get("score_keys") or [ev.primary])
    extra = [k for k in ("cider",) if any(k in r for r in rows)]
    per_type = [k for r in rows for k in r if k.startswith("acc_")]
    evidence = ["evidence_recall"] if any("evidence_recall" in r for r in rows) else []
    return list(dict.fromkeys([*keys, *extra, *per_type, *evidence]))


def _memory_label(ev: EvalRun) -> str:
    kinds = {r.get("memory_kind") for r in ev.summary["rows"]} - {None}
    labels = {"peak_gpu": "peak CUDA MiB", "request_peak_rss": "per-request peak RSS MiB",
              "lifetime_peak_rss": "lifetime peak RSS MiB", "peak_rss": "lifetime peak RSS MiB"}
    names = {labels.get(k, "peak MiB") for k in kinds}
    return names.pop() if len(names) == 1 else "peak MiB (mixed kinds)"


def _adapter_text(adapter) -> str:
    """run.json's adapter entry: a path (older runs) or {path, lora, shirg_weights}."""
    if not adapter:
        return "none"
    if isinstance(adapter, str):
        return adapter
    parts = [adapter.get("path") or "-"]
    if adapter.get("lora"):
        parts.append(f"LoRA r={adapter['lora'].get('r')}")
    if adapter.get("shirg_weights"):
        parts.append(f"SHIRG weights {adapter['shirg_weights']}")
    return "; ".join(parts)


def eval_section(ev: EvalRun, files_dir: str) -> list[str]:
    s = ev.summary
    rows = s["rows"]
    out = [f"## {ev.label}", "",
           f"Folder `{ev.path}`: task `{ev.task}`, {s['samples']} samples answered by every mode, primary score "
           f"`{ev.primary}` (scores in percent).", ""]
    if not rows:
        return [*out, "No mode has answered yet: nothing to compare.", ""]
    scores = _score_columns(ev)
    cols = ["n", *scores, "visual_tokens", "latency_mean_s", "latency_median_s", "peak_memory_mb", "fallbacks"]
    if any(r.get("failures") for r in rows):  # failed high-resolution passes (older summaries have no count)
        cols.append("failures")
    header = ["mode", *[("**" + c + "**") if c == ev.primary else c for c in cols]]
    header = [h.replace("peak_memory_mb", _memory_label(ev)) for h in header]
    out += ["### Comparison", "", *table(header, [[r["mode"], *(_fmt_key(r, c) for c in cols)] for r in rows]), ""]
    out += stats_section(ev)
    refs = [ref for ref in REFERENCES if any(r["mode"] == ref for r in rows)]
    if refs:
        dcols = [f"{kind}_{ref}" for ref in refs for kind in ("delta_vs", "latency_x", "memory_x")]
        out += ["### Deltas", "",
                f"Points of `{ev.primary}` against {' and '.join(f'`{r}`' for r in refs)}; median latency and peak "
                "memory as ratios (as the run computed them).", "",
                *table(["mode", *dcols], [[r["mode"], *(_fmt_key(r, c) for c in dcols)] for r in rows]), ""]
    else:
        out += ["No `lowres` or `full` row in this run: no deltas (add those modes to the run to get them).", ""]
    out += ablation_section(ev)
    defs = s.get("definitions") or {}
    if defs:
        out += ["Metrics:", "", *(f"- `{k}`: {v}" for k, v in defs.items()), ""]
    if s.get("cider_backend"):
        out += [f"CIDEr backend: `{s['cider_backend']}`.", ""]
    if s.get("memory"):
        out += [f"Memory column ({s['memory']['label']}): {s['memory']['note']}.", ""]
    if s.get("modes_without_answers"):
        out += [f"Modes without answers yet: {', '.join(s['modes_without_answers'])}.", ""]
    if s.get("answered_beyond_common"):
        extra = ", ".join(f"{m} ({n})" for m, n in s["answered_beyond_common"].items())
        out += [f"Modes with answers outside the common sample set (an incomplete run): {extra}.", ""]
    for caption, name, _src in ev.images:
        out += [f"![{ev.task}: {caption}]({_link(files_dir, name)})", "", f"*{caption}*", ""]
    return out


def stats_section(ev: EvalRun) -> list[str]:
    """Every score's 95 % interval and every mode's paired difference against the reference (as the
    run's summary.json holds them, or recomputed from its predictions.jsonl for ``--reference``)."""
    if not ev.summary.get("stats"):
        return ["No intervals: this summary.json predates them and the folder has no predictions.jsonl to "
                "compute them from.", ""]
    note = [f"Paired differences recomputed from `{ev.path / 'predictions.jsonl'}` against "
            f"`{ev.summary['stats']['reference']}`.", ""] if ev.restated else []
    return ["### Intervals and paired differences", "", *note, *stats_markdown(ev.summary)[1:], ""]


def _ablation_names(ev: EvalRun) -> list[str]:
    """Rows that are SHIRG ablations: the names the runner defines, or a run.json mode running
    ``shirg`` under another name."""
    modes = (ev.run or {}).get("modes", {})
    names = []
    for r in ev.summary["rows"]:
        m = r["mode"]
        if m in ABLATIONS or (m != "shirg" and modes.get(m, {}).get("mode") == "shirg"):
            names.append(m)
    return names


def _changed_options(ev: EvalRun, name: str) -> str:
    modes = (ev.run or {}).get("modes", {})
    base, this = modes.get("shirg", {}).get("options"), modes.get(name, {}).get("options")
    if not base or not this:
        return "-"
    diff = [f"{k}: {json.dumps(this[k])}" for k in this if this.get(k) != base.get(k)]
    return "; ".join(diff) or "none"


def ablation_section(ev: EvalRun) -> list[str]:
    names = _ablation_names(ev)
    if not names:
        return []
    by_mode = {r["mode"]: r for r in ev.summary["rows"]}
    cols = [ev.primary, "visual_tokens", "latency_median_s", *(f"delta_vs_{ref}" for ref in REFERENCES
                                                               if ref in by_mode)]
    rows = []
    for name in (["shirg"] if "shirg" in by_mode else []) + names:
        what = "the reference: SHIRG as configured" if name == "shirg" else ABLATIONS.get(name, ("-",))[0]
        changed = "-" if name == "shirg" else _changed_options(ev, name)
        rows.append([name, what, changed, *(_fmt_key(by_mode[name], c) for c in cols)])
    return ["### Ablations", "",
            "SHIRG with one switch changed per row (options as run.json records them); compare each row with the "
            "`shirg` row.", "", *table(["mode", "what changes", "options changed", *cols], rows), ""]


def overview_section(evals: list[EvalRun]) -> list[str]:
    """Primary score of every mode in every eval folder, side by side."""
    modes = list(dict.fromkeys(r["mode"] for ev in evals for r in ev.summary["rows"]))
    if len(evals) < 2 or not modes:
        return []
    header = ["mode", *(f"{ev.label}: {ev.primary}" for ev in evals)]
    rows = []
    for m in modes:
        cells = []
        for ev in evals:
            row = next((r for r in ev.summary["rows"] if r["mode"] == m), None)
            cells.append(num(row.get(ev.primary)) if row else "not run")
        rows.append([m, *cells])
    return ["## Overview", "", "Primary score (percent) per task; each column comes from its own folder below.", "",
            *table(header, rows), ""]


def runs_section(evals: list[EvalRun], benches: list[tuple[Path, dict]],
                 analytics: list[tuple[Path, dict]]) -> list[str]:
    out = ["## How these numbers were produced", ""]
    for ev in evals:
        out += [f"### {ev.label}", ""]
        invs = _invocations(ev)
        if not invs:
            out += [f"`{ev.path}` records no command (no run.json invocations).", ""]
        settings = (ev.run or {}).get("settings") or (ev.summary.get("run") or {}).get("settings")
        for inv in invs:
            m = inv.get("machine") or {}
            out += ["```bash", inv.get("command") or "(command not recorded)", "```", "",
                    *table(["started", "model", "adapter", "data", "samples", "processes", "device", "device name",
                            "torch", "python", "host CPUs", "torch threads"],
                           [[inv.get("time", "-"), inv.get("model", "-"), _adapter_text(inv.get("adapter")),
                             inv.get("data", "-"), str(inv.get("samples", "-")), str(inv.get("world_size", "-")),
                             m.get("device", "-"), m.get("device_name", "-"), m.get("torch", "-"),
                             m.get("python", "-"), str(m.get("host_cpus", "-")), str(m.get("torch_threads", "-"))]]),
                    ""]
        if settings:
            out += [f"Generation settings: `{json.dumps(settings.get('gen', {}), sort_keys=True)}`, prompt suffix "
                    f"`{settings.get('prompt_suffix')!r}`, batch size {settings.get('batch_size', '-')}.", ""]
    for path, b in benches:
        out += [f"### Benchmark `{path}`", "",
                "bench.json records the settings, not the command line:", "",
                *table(["model", "device", "dtype", "torch threads", "steps", "answer tokens", "KV cache", "repeats",
                        "resolution", "image"],
                       [[b.get("model", "-"), b.get("device", "-"), b.get("dtype", "-"), str(b.get("torch_threads")),
                         str(b.get("steps")), str(b.get("gen_length")), b.get("kv_cache", "-"), str(b.get("repeats")),
                         str(b.get("resolution")), " x ".join(str(v) for v in b.get("image_size", []))]]), ""]
    for path, a in analytics:
        out += [f"### Roofline `{path}`", "",
                f"`shirg bench --analytic`: {a.get('model')}; {a['gpu'].get('name')}; {a.get('steps')} steps, "
                f"{a.get('gen_length')} answer slots, {a.get('text_tokens')} text tokens, resolution "
                f"{a.get('resolution')}. A formula, not a measurement.", ""]
    return out


def bench_section(path: Path, b: dict, files_dir: str, image: str | None) -> list[str]:
    rows = b["rows"]
    head = ["mode", "visual", "prompt", "KV MiB", "peak MiB", "act+KV MiB", "total ms (median)", "total ms (min)",
            "total ms (max)", "select ms", "select % of vision", "x lowres", "x full", "act+KV x lowres",
            "act+KV x full"]
    body = []
    for r in rows:
        t = r.get("time_s", {})
        total, select = t.get("total", {}), t.get("select", {})
        body.append([r["mode"], num(r.get("visual_tokens"), 0), num(r.get("prompt_length"), 0),
                     num(r.get("kv_cache_bytes"), 2, 1 / MIB), num(r.get("peak_mb"), 0), num(r.get("act_kv_mb"), 1),
                     num(total.get("median"), 1, 1e3), num(total.get("min"), 1, 1e3), num(total.get("max"), 1, 1e3),
                     num(select.get("median"), 2, 1e3), num(r.get("select_pct_of_vision"), 2),
                     *(num(r.get(k), 2, suffix="x") for k in ("total_vs_lowres", "total_vs_full", "act_kv_vs_lowres",
                                                               "act_kv_vs_full"))])
    out = [f"## Measured latency and memory (`{path}`)", "",
           f"{b.get('model')} on {b.get('device')}, median of {b.get('repeats')} timed answers after a warm-up.", "",
           *table(head, body), "", f"Memory: {b.get('memory_note', '-')}.", ""]
    stages = [s for s in ("preprocess", "vision", "select", "project", "prefill", "denoise")
              if any(s in r.get("time_s", {}) for r in rows)]
    if stages:
        out += ["Median ms per stage:", "",
                *table(["mode", *stages], [[r["mode"], *(num(r["time_s"].get(s, {}).get("median"), 2, 1e3)
                                                          for s in stages)] for r in rows]), ""]
    if b.get("targets"):
        out += ["Checklist targets on this run's numbers:", "",
                *table(["target", "value", "limit", "met"],
                       [[t["target"], num(t.get("value"), 2), num(t.get("limit"), 2), "yes" if t.get("met") else "no"]
                        for t in b["targets"]]), ""]
    if image:
        out += [f"![stage times]({_link(files_dir, image)})", "", "*median time per stage and mode*", ""]
    return out


def analytic_section(path: Path, a: dict) -> list[str]:
    gpu = a["gpu"]
    head = ["mode", "visual", "prefix", "cached total ms", "uncached total ms", "KV MiB", "act MiB", "total GB",
            "lat x lowres", "lat x full", "act+KV x lowres", "act+KV x full"]
    body = [[r["mode"], num(r.get("geometry", {}).get("visual_tokens"), 0), num(r.get("prefix_tokens"), 0),
             num(r.get("latency_cached_s"), 1, 1e3), num(r.get("latency_uncached_s"), 1, 1e3),
             num(r.get("kv_bytes"), 0, 1 / MIB), num(r.get("activation_bytes"), 0, 1 / MIB),
             num(r.get("memory_total_bytes"), 2, 1 / GB),
             *(num(r.get(k), 2, suffix="x") for k in ("latency_cached_vs_lowres", "latency_cached_vs_full",
                                                       "memory_act_kv_vs_lowres", "memory_act_kv_vs_full"))]
            for r in a["rows"]]
    out = [f"## Roofline model (`{path}`)", "",
           f"Lower bounds on {gpu.get('name')} from the real config's shapes (`shirg bench --analytic`), not "
           "measurements.", "", *table(head, body), ""]
    if a.get("claims"):
        rows = []
        for c in a["claims"]:
            if "below_floor" in c:
                verdict = "below the physical floor" if c["below_floor"] else "possible"
            else:
                verdict = "possible" if c.get("possible_in_bf16") else "impossible without weight quantization"
            rows.append([c.get("claim", "-"), verdict, c.get("why", "-")])
        out += ["Checklist claims:", "", *table(["claim", "verdict", "why"], rows), ""]
    if a.get("targets"):
        out += ["Checklist targets, predicted:", "",
                *table(["target", "measure", "predicted ratio", "limit", "met", "why"],
                       [[t["target"], t.get("metric", "-"), num(t.get("predicted"), 2), num(t.get("limit"), 2),
                         "yes" if t.get("met") else "no", t.get("why", "-")] for t in a["targets"]]), ""]
    return out


def limits_section(evals: list[EvalRun], benches: list[tuple[Path, dict]],
                   analytics: list[tuple[Path, dict]]) -> list[str]:
    notes = []
    for ev in evals:
        invs = _invocations(ev)
        models = {i.get("model", "") for i in invs}
        if any("random weights" in m for m in models):
            notes.append(f"{ev.label}: the model has random weights ({', '.join(sorted(models))}); its scores "
                         "check the plumbing and say nothing about the method.")
        if not invs:
            notes.append(f"{ev.label}: no run.json invocation: the model, data and machine are unknown.")
        devices = {(i.get("machine") or {}).get("device", "") for i in invs}
        if any(d.startswith("cpu") for d in devices):
            threads = sorted({str((i.get("machine") or {}).get("torch_threads", "?")) for i in invs})
            notes.append(f"{ev.label}: timed on CPU ({', '.join(threads)} torch threads): latencies are noisy and "
                         "do not predict GPU latencies; memory is process RSS, not CUDA allocation.")
        kinds = {r.get("memory_kind") for r in ev.summary["rows"]}
        if kinds & {"lifetime_peak_rss", "peak_rss"}:
            notes.append(f"{ev.label}: memory is the process-lifetime peak RSS, which depends on the order the modes "
                         "ran in; it is not a per-mode figure.")
        if len(invs) > 1:
            notes.append(f"{ev.label}: the folder was filled by more than one invocation (a resumed or extended run); "
                         "their latencies may come from different machine states.")
        notes.append(f"{ev.label}: {ev.summary['samples']} samples per mode; a difference is evidence only where its "
                     "paired 95 % interval excludes 0.")
        if ev.restated:
            notes.append(f"{ev.label}: the intervals and paired differences were recomputed from predictions.jsonl "
                         "(not read from summary.json).")
        falls = [f"{r['mode']} ({r['fallbacks']})" for r in ev.summary["rows"] if r.get("fallbacks")]
        if falls:
            notes.append(f"{ev.label}: answers that fell back to another mode: {', '.join(falls)}.")
        fails = [f"{r['mode']} ({r['failures']})" for r in ev.summary["rows"] if r.get("failures")]
        if fails:
            notes.append(f"{ev.label}: failed high-resolution passes, scored as wrong answers: {', '.join(fails)}.")
        if ev.summary.get("modes_without_answers") or ev.summary.get("answered_beyond_common"):
            notes.append(f"{ev.label}: the run is incomplete; the table covers only the samples every mode answered.")
        hires = {m for m, d in ((ev.run or {}).get("modes") or {}).items() if reads_question(d.get("mode") or "")}
        if hires and invs and all(not i.get("adapter") for i in invs):
            notes.append(f"{ev.label}: SHIRG modes ran without adapter weights (no --adapter recorded).")
    tasks_gen = {json.dumps(((ev.run or {}).get("settings") or {}).get("gen"), sort_keys=True) for ev in evals}
    if len(tasks_gen) > 1:
        notes.append("The eval folders used different generation settings; compare rows within a folder, not across.")
    for path, b in benches:
        if "random weights" in str(b.get("model", "")):
            notes.append(f"Benchmark `{path}`: random-weight model ({b.get('model')}); its timings reflect that "
                         "model's shapes only.")
        if b.get("device") == "cpu":
            notes.append(f"Benchmark `{path}`: CPU timings ({b.get('torch_threads')} threads) with "
                         f"{b.get('repeats')} timed repeats: noisy, not GPU predictions.")
    for path, _a in analytics:
        notes.append(f"Roofline `{path}`: lower bounds from FLOPs and bytes moved; activation traffic is left out.")
    notes.append("Every number above is read from the runs' JSON files (rounded; seconds shown as ms and bytes as "
                 "MiB or GB where labelled); the report computes none of its own.")
    return ["## Limits", "", *(f"- {n}" for n in notes), ""]


# ----------------------------------------------------------------------------- the document


def _copy(src: Path, dst: Path) -> None:
    atomic_write(dst, lambda p: shutil.copyfile(src, p))


def build_report(evals: list[str | Path] = (), benches: list[str | Path] = (), analytics: list[str | Path] = (),
                 out: str | Path = "REPORT.md", reference: str | None = None) -> Path:
    """Read every input folder (all checked before anything is written), copy the plots into
    ``<out stem>_files/`` and write the report atomically. Returns the report's path."""
    if not (evals or benches or analytics):
        raise ReportError("nothing to report: pass at least one --eval, --bench or --analytic folder")
    out = Path(out)
    if out.is_dir():
        raise ReportError(f"--out {out} is a folder; give the report's file name, e.g. {out / 'REPORT.md'}")
    runs = [load_eval(p, reference) for p in evals]
    bench = [load_bench(p) for p in benches]
    analytic = [load_analytic(p) for p in analytics]
    files_name = f"{out.stem}_files"
    files_dir = out.parent / files_name
    used: set[str] = set()

    def unique(stem: str) -> str:
        name, n = _slug(stem), 2
        while name in used:
            name, n = f"{_slug(stem)}-{n}", n + 1
        used.add(name)
        return name

    labels = [f"{ev.task} ({ev.path.resolve().name})" for ev in runs]
    for ev, label in zip(runs, labels, strict=True):
        ev.label = label if labels.count(label) == 1 else f"{ev.task} ({ev.path})"
        prefix = unique(f"{ev.task}-{ev.path.resolve().name}")
        ev.images = [(caption, f"{prefix}-{name}", ev.path / name) for name, caption in EVAL_PLOTS
                     if (ev.path / name).is_file()]
    bench_images = []
    for path, _b in bench:
        bench_images.append(f"{unique('bench-' + path.resolve().name)}-bench.png"
                            if (path / "bench.png").is_file() else None)

    lines = ["# SHIRG evaluation report", "",
             "Compiled by `shirg report` from the folders below; every number is a value a run wrote.", ""]
    sources = [*(f"- eval: `{ev.path}`" for ev in runs), *(f"- bench: `{p}`" for p, _ in bench),
               *(f"- roofline: `{p}`" for p, _ in analytic)]
    lines += [*sources, ""]
    lines += overview_section(runs)
    for ev in runs:
        lines += eval_section(ev, files_name)
    for (path, b), image in zip(bench, bench_images, strict=True):
        lines += bench_section(path, b, files_name, image)
    for path, a in analytic:
        lines += analytic_section(path, a)
    lines += runs_section(runs, bench, analytic)
    lines += limits_section(runs, bench, analytic)

    for ev in runs:
        for _caption, name, src in ev.images:
            _copy(src, files_dir / name)
    for (path, _b), image in zip(bench, bench_images, strict=True):
        if image:
            _copy(path / "bench.png", files_dir / image)
    return write_text(out, "\n".join(lines).rstrip("\n") + "\n")
