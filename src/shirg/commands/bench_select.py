"""`shirg bench-select`: selection overhead against the SigLIP forward, on the same machine.

The tower is built with random weights at the real so400m shape (26 layers, width 1152): time
does not depend on weight values, so no download is needed.
"""

from __future__ import annotations

import argparse

from shirg.commands._common import add_device_options, device_of
from shirg.io import write_json

HELP = "time scoring + merging + selection against the SigLIP forward on the same machine"

TOWERS = ("so400m", "small")  # shirg.bench.selection.TOWERS (repeated: --help stays torch-free)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tower", default="so400m", choices=sorted(TOWERS), help="tower shape (random weights)")
    p.add_argument("--resolution", type=int, default=672)
    p.add_argument("--strategies", default="shirg", help="comma-separated strategies to time")
    p.add_argument("--repeats", type=int, default=3)
    add_device_options(p)
    p.add_argument("--json", default=None, help="write the results as JSON")


def run(args: argparse.Namespace) -> int:
    import torch

    with torch.no_grad():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from shirg.bench.selection import measure_selection
    from shirg.errors import resolve_dtype

    device = device_of(args)
    result = measure_selection(args.tower, args.resolution, args.strategies.split(","), args.repeats, device,
                               resolve_dtype(args.dtype, device))
    rows = result["rows"]
    print(f"device {result['device']}, {result['dtype']}, tower {result['tower']} at {args.resolution}: "
          f"median {result['tower_ms']:.1f} ms over {args.repeats} runs")
    print(f"{'strategy':<12} {'score':<26} {'select ms':>10} {'% of tower':>11}  target: {result['target']}")
    for r in rows:
        print(f"{r['strategy']:<12} {r['score']:<26} {r['select_ms']:>10.2f} {100 * r['ratio_to_tower']:>10.2f}%  "
              f"{'met' if r['meets_target'] else 'NOT met'}")
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0
