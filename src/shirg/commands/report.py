"""`shirg report`: compile eval, bench and roofline folders into one self-contained Markdown report.

    shirg report --eval runs/chartqa --eval runs/docvqa --bench runs/bench --analytic runs/roofline \\
        --out reports/REPORT.md

Writes REPORT.md and copies its plots into REPORT_files/ next to it (relative links). Every number
in the report is read from the runs' JSON files; a missing folder or summary.json is an error.
"""

from __future__ import annotations

import argparse

HELP = "compile eval / bench / roofline outputs into one Markdown report (numbers only from the runs)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--eval", dest="evals", action="extend", nargs="+", default=[], metavar="DIR",
                   help="`shirg eval` output folder (holds summary.json); repeat or list several")
    p.add_argument("--bench", dest="benches", action="extend", nargs="+", default=[], metavar="DIR",
                   help="`shirg bench --out` folder (holds bench.json)")
    p.add_argument("--analytic", dest="analytics", action="extend", nargs="+", default=[], metavar="DIR",
                   help="`shirg bench --analytic --out` folder (holds analytic.json)")
    p.add_argument("--reference", default=None, metavar="MODE",
                   help="mode every other is compared with, paired (default: the one each eval run used, full); "
                        "another one is recomputed from the folder's predictions.jsonl")
    p.add_argument("--out", required=True, help="report file, e.g. REPORT.md (plots go to REPORT_files/ beside it)")


def run(args: argparse.Namespace) -> int:
    from shirg.evaluate.report import build_report

    path = build_report(args.evals, args.benches, args.analytics, args.out, args.reference)
    print(f"wrote {path} (plots in {path.parent / (path.stem + '_files')})")
    return 0
