"""`shirg bench-select`: selection overhead against the SigLIP forward, on the same machine.

The tower is built with random weights at the real so400m shape (26 layers, width 1152): time
does not depend on weight values, so no download is needed.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

from shirg.commands._common import add_device_options, device_of
from shirg.io import write_json

HELP = "time scoring + merging + selection against the SigLIP forward on the same machine"

TOWERS = {
    "so400m": {},
    "small": dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=6),
}


TARGET = {False: "< 2 % of the tower's time (CPU)", True: "< 2 ms per image (GPU)"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tower", default="so400m", choices=sorted(TOWERS), help="tower shape (random weights)")
    p.add_argument("--resolution", type=int, default=672)
    p.add_argument("--strategies", default="shirg", help="comma-separated strategies to time")
    p.add_argument("--repeats", type=int, default=3)
    add_device_options(p)
    p.add_argument("--json", default=None, help="write the results as JSON")


def _timed(fn, device, repeats: int) -> list[float]:
    import torch

    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def run(args: argparse.Namespace) -> int:
    import torch

    with torch.no_grad():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    import torch

    from shirg.errors import resolve_dtype
    from shirg.tokens.dual_scale import default_k, dual_scale
    from shirg.tokens.registry import TEXT_STRATEGIES, select_tokens
    from shirg.tokens.types import TextContext
    from shirg.vision.siglip import SO400M, VisionTower, vision_config

    device = device_of(args)
    dtype = resolve_dtype(args.dtype, device)
    cfg = vision_config(**TOWERS[args.tower])
    with torch.device(device):
        tower = VisionTower(cfg).to(dtype).eval()
    pixels = torch.randn(1, 3, args.resolution, args.resolution, device=device, dtype=dtype)
    tower_times = _timed(lambda: tower(pixels), device, args.repeats)
    feats = tower(pixels)
    grid = args.resolution // 14
    k = default_k(grid)
    d_llm = 4096
    proj = torch.nn.Sequential(
        torch.nn.Linear(cfg.hidden_size, d_llm), torch.nn.GELU(), torch.nn.Linear(d_llm, d_llm)
    ).to(device=device, dtype=dtype)
    question = torch.randn(1, 16, d_llm, device=device, dtype=dtype)
    rows = []
    tower_med = statistics.median(tower_times)
    for name in args.strategies.split(","):
        for label, text in (("saliency", None), ("text", TextContext(project=proj, question=question))):
            if name not in TEXT_STRATEGIES and text is not None:
                continue

            def select(name=name, text=text):
                return select_tokens(name, dual_scale(feats), k, text)

            times = _timed(select, device, args.repeats)
            med = statistics.median(times)
            rows.append(
                {
                    "strategy": name,
                    "score": label,
                    "select_ms": med * 1e3,
                    "select_min_ms": min(times) * 1e3,
                    "ratio_to_tower": med / tower_med,
                    "meets_target": med < 0.002 if device.type == "cuda" else med / tower_med < 0.02,
                }
            )
    result = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "dtype": str(dtype).replace("torch.", ""),
        "tower": args.tower if args.tower != "so400m" else f"so400m ({SO400M['num_hidden_layers']} layers)",
        "resolution": args.resolution,
        "tokens": grid * grid,
        "k": k,
        "repeats": args.repeats,
        "tower_ms": tower_med * 1e3,
        "tower_min_ms": min(tower_times) * 1e3,
        "target": TARGET[device.type == "cuda"],
        "rows": rows,
    }
    print(f"device {result['device']}, {result['dtype']}, tower {result['tower']} at {args.resolution}: "
          f"median {tower_med * 1e3:.1f} ms over {args.repeats} runs")
    print(f"{'strategy':<12} {'score':<9} {'select ms':>10} {'% of tower':>11}  target: {result['target']}")
    for r in rows:
        print(f"{r['strategy']:<12} {r['score']:<9} {r['select_ms']:>10.2f} {100 * r['ratio_to_tower']:>10.2f}%  "
              f"{'met' if r['meets_target'] else 'NOT met'}")
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0
