"""Selection overhead against the SigLIP forward on the same machine (``shirg bench-select``).

The tower is built with random weights at the real so400m shape (26 layers, width 1152): time
does not depend on weight values, so no download is needed.
"""

from __future__ import annotations

import platform
import statistics
import time

import torch

import shirg.tokens.builtin  # noqa: F401 - every strategy registered
from shirg.options import ShirgOptions
from shirg.tokens.dual_scale import default_k, dual_scale
from shirg.tokens.registry import select_tokens, text_strategies
from shirg.tokens.relevance_head import RelevanceHead
from shirg.tokens.types import TextContext
from shirg.vision.siglip import SO400M, VisionTower, vision_config

TOWERS = {
    "so400m": {},
    "small": dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=6),
}
TARGET = {False: "< 2 % of the tower's time (CPU)", True: "< 2 ms per image (GPU)"}


def timed(fn, device, repeats: int) -> list[float]:
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


@torch.no_grad()
def measure_selection(tower_name: str, resolution: int, strategies: list[str], repeats: int, device: torch.device,
                      dtype: torch.dtype) -> dict:
    """Median tower time and, per strategy (and score source), selection time and its ratio to the tower."""
    cfg = vision_config(**TOWERS[tower_name])
    with torch.device(device):
        tower = VisionTower(cfg).to(dtype).eval()
    pixels = torch.randn(1, 3, resolution, resolution, device=device, dtype=dtype)
    tower_times = timed(lambda: tower(pixels), device, repeats)
    feats = tower(pixels)
    grid = resolution // cfg.patch_size
    k = default_k(grid)
    d_llm = 4096
    proj = torch.nn.Sequential(
        torch.nn.Linear(cfg.hidden_size, d_llm), torch.nn.GELU(), torch.nn.Linear(d_llm, d_llm)
    ).to(device=device, dtype=dtype)
    question = torch.randn(1, 16, d_llm, device=device, dtype=dtype)
    head = RelevanceHead(d_llm, rank=16).to(device=device, dtype=dtype)  # a trained head's shape and cost
    tower_head = RelevanceHead(cfg.hidden_size, rank=16, text_dim=d_llm, reads="tower").to(device=device, dtype=dtype)
    with torch.no_grad():
        head.scale.fill_(1.0)
        tower_head.scale.fill_(1.0)
    text = TextContext(project=proj, question=question)
    with_head = TextContext(project=proj, question=question, head=head)
    with_tower_head = TextContext(project=proj, question=question, head=tower_head)
    # (label, text context, SHIRG's text stride, SHIRG's score source)
    scores = (("saliency", None, 1, "saliency"), ("text", text, 1, "text"),
              ("text + relevance head", with_head, 1, "text"), ("text, 2 x 2 cells", text, 2, "text"),
              ("text + head, 2 x 2 cells", with_head, 2, "text"),
              ("saliency + tower head", with_tower_head, 1, "head"))
    rows = []
    tower_med = statistics.median(tower_times)
    for name in strategies:
        for label, ctx, stride, source in scores:
            shirg_only = ctx is not None and (ctx.head is not None or stride > 1)  # head and stride: SHIRG's
            if (ctx is not None and name not in text_strategies()) or (shirg_only and name != "shirg"):
                continue  # a text score only where the strategy reads the question
            options = {"options": ShirgOptions(sim_stride=stride, source=source)} if name == "shirg" else {}

            def select(name=name, ctx=ctx, options=options):
                return select_tokens(name, dual_scale(feats), k, ctx, **options)

            times = timed(select, device, repeats)
            med = statistics.median(times)
            rows.append(
                {
                    "strategy": name,
                    "score": label,
                    "sim_stride": stride,
                    "source": source if name == "shirg" else None,
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
        "tower": tower_name if tower_name != "so400m" else f"so400m ({SO400M['num_hidden_layers']} layers)",
        "resolution": resolution,
        "tokens": grid * grid,
        "k": k,
        "repeats": repeats,
        "tower_ms": tower_med * 1e3,
        "tower_min_ms": min(tower_times) * 1e3,
        "target": TARGET[device.type == "cuda"],
        "rows": rows,
    }
    return result
