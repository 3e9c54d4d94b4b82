"""`shirg compare`: paired comparison of `shirg eval` runs on the same samples (e.g. weight formats or
samplers): each run's score with its 95 % Wilson interval, the paired difference against the base run
(Newcombe's 95 % interval for paired proportions, McNemar exact p:
the project's statistics in shirg.evaluate.stats), answer agreement with the base, steps used, latency.

    shirg compare --base runs/eval-float --other runs/eval-int8 runs/eval-int4 --mode full
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from shirg.errors import ConfigError
from shirg.evaluate.stats import paired_difference, wilson  # pure Python: start-up stays fast
from shirg.io import read_jsonl, write_json, write_text

HELP = "paired comparison of eval runs on the same samples (intervals, paired differences, McNemar p)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", required=True, help="`shirg eval` output folder the others are compared against")
    p.add_argument("--other", dest="others", action="extend", nargs="+", required=True, metavar="DIR",
                   help="`shirg eval` output folders, each compared with --base")
    p.add_argument("--mode", default=None, help="mode to compare (default: the only mode of the base run)")
    p.add_argument("--other-mode", default=None, metavar="MODE",
                   help="mode of the other runs, when it differs from the base's (e.g. shirg with a head against "
                        "visionzip without)")
    p.add_argument("--metric", default="accuracy", help="0/1 score of each sample (default accuracy)")
    p.add_argument("--type", dest="qtype", default=None, metavar="TYPE",
                   help="only the samples of this question type (EntityGrid: recognition, position, counting, "
                        "reading)")
    p.add_argument("--out", default=None, help="write compare.json and compare.md into this folder")


def load_predictions(folder: str | Path, mode: str | None) -> tuple[str, dict[str, dict]]:
    path = Path(folder) / "predictions.jsonl"
    if not path.is_file():
        raise ConfigError(f"{folder} has no predictions.jsonl; pass a finished `shirg eval --out` folder")
    records = read_jsonl(path)
    modes = sorted({r["mode"] for r in records})
    if mode is None:
        if len(modes) != 1:
            raise ConfigError(f"{folder} holds modes {', '.join(modes)}; choose one with --mode")
        mode = modes[0]
    if mode not in modes:
        raise ConfigError(f"{folder} has no mode {mode!r}; it holds {', '.join(modes)}")
    return mode, {r["id"]: r for r in records if r["mode"] == mode}


def of_type(records: dict[str, dict], qtype: str | None, folder) -> dict[str, dict]:
    """The records of one question type (all of them when ``qtype`` is None)."""
    if qtype is None:
        return records
    kept = {i: r for i, r in records.items() if r.get("type") == qtype}
    if not kept:
        types = sorted({str(r.get("type")) for r in records.values()})
        raise ConfigError(f"{folder} has no sample of type {qtype!r}; it holds {', '.join(types)}")
    return kept


def _mean(values: list):
    """The mean, or None when a value is missing (selection-only records: no steps, no latency)."""
    return statistics.mean(values) if values and all(v is not None for v in values) else None


def _value(record: dict, metric: str):
    """A 0/1 score of a record: from its ``scores``, else a record field (``queried_patch_kept``)."""
    scores = record.get("scores") or {}
    return scores[metric] if metric in scores else record[metric]


def compare(base: dict[str, dict], others: dict[str, dict[str, dict]], metric: str) -> list[dict]:
    rows = []
    for name, other in others.items():
        if set(other) != set(base):
            raise ConfigError(f"{name} and the base run answered different samples ({len(other)} vs {len(base)}); "
                              "compare runs of the same data")
        ids = sorted(base)
        try:
            x = [int(round(_value(base[i], metric))) for i in ids]
            y = [int(round(_value(other[i], metric))) for i in ids]
        except (KeyError, TypeError) as e:
            raise ConfigError(f"metric {metric!r} is not in the runs' scores or records (or is missing for a "
                              "sample)") from e
        stats = paired_difference(x, y)
        same = sum(1 for i in ids if base[i].get("prediction") == other[i].get("prediction"))
        rows.append({
            "run": name, **stats,
            "agreement": same / len(ids), "agreement_ci": wilson(same, len(ids)),
            "steps_used_mean": _mean([other[i].get("steps_used") for i in ids]),
            "latency_mean_s": _mean([other[i].get("latency_s") for i in ids]),
        })
    return rows


def markdown(base_name: str, mode: str, metric: str, rows: list[dict], base_steps, base_latency) -> str:
    def pct(v):
        return f"{100 * v:.1f}"

    def ci(t):
        return f"[{pct(t[0])}, {pct(t[1])}]"

    r0 = rows[0]
    lines = [f"Mode {mode}, {metric} in %, {r0['n']} paired samples; base {base_name}: {pct(r0['base'])} "
             f"{ci(r0['base_ci'])}" + (f", {base_steps:g} steps" if base_steps is not None else "")
             + (f", {base_latency * 1e3:.0f} ms per answer" if base_latency is not None else ""), "",
             f"| run | {metric} | 95 % CI | diff vs base (points) | 95 % CI | base only / run only | McNemar p | "
             "same answer % | 95 % CI | steps used | ms per answer |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        steps = f"{r['steps_used_mean']:.2f}" if r["steps_used_mean"] is not None else "-"
        ms = f"{r['latency_mean_s'] * 1e3:.0f}" if r["latency_mean_s"] is not None else "-"
        lines.append(f"| {r['run']} | {pct(r['other'])} | {ci(r['other_ci'])} | {100 * r['diff']:+.1f} | "
                     f"{ci(r['diff_ci'])} | {r['base_only']} / {r['other_only']} | {r['mcnemar_p']:.3g} | "
                     f"{pct(r['agreement'])} | {ci(r['agreement_ci'])} | {steps} | {ms} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    mode, base = load_predictions(args.base, args.mode)
    base = of_type(base, args.qtype, args.base)
    others = {str(d): of_type(load_predictions(d, args.other_mode or mode)[1], args.qtype, d) for d in args.others}
    rows = compare(base, others, args.metric)
    base_steps = _mean([r.get("steps_used") for r in base.values()])
    base_latency = _mean([r.get("latency_s") for r in base.values()])
    label = mode if not args.other_mode or args.other_mode == mode else f"{args.other_mode} (runs) vs {mode} (base)"
    if args.qtype:
        label += f", {args.qtype} questions"
    text = markdown(str(args.base), label, args.metric, rows, base_steps, base_latency)
    print(text)
    if args.out:
        out = Path(args.out)
        write_json(out / "compare.json", {"base": str(args.base), "mode": mode,
                                          "other_mode": args.other_mode or mode, "metric": args.metric,
                                          "type": args.qtype, "base_steps_used_mean": base_steps, "rows": rows})
        write_text(out / "compare.md", text + "\n")
        print(f"wrote {out / 'compare.json'}, {out / 'compare.md'}")
    return 0
