"""`shirg demo`: the bundled small SHIRG-LaViDa answers a held-out EntityGrid question in several modes.

    shirg demo                                   # bundled model, image and question
    shirg demo --image grid.png --question "What number is written under the red star?"
    shirg demo --model DIR [--adapter DIR]       # any LaViDa checkpoint

Prints each mode's answer, visual tokens and per-stage times, and writes OUT/overlay.png (which
tokens each high-resolution mode kept) and OUT/demo.json. With the bundled model, ``shirg`` runs
with the bundled SHIRG adapter and the other modes without it, as they were trained.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from shirg.commands._common import (
    add_device_options,
    add_generation_options,
    add_weight_format_option,
    device_of,
    generation_kwargs,
)
from shirg.errors import ConfigError

HELP = "answer a bundled EntityGrid question with the bundled small model in lowres, full and shirg modes"
DEFAULT_MODES = "lowres,full,shirg"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="LaViDa checkpoint folder (default: the bundled small model)")
    p.add_argument("--adapter", default=None, metavar="DIR",
                   help="adapter used by the shirg mode (default: the bundled one with the bundled model)")
    p.add_argument("--image", default=None, help="image file (default: the bundled EntityGrid sample)")
    p.add_argument("--question", default=None, help="the question (default: the bundled sample's)")
    p.add_argument("--modes", default=DEFAULT_MODES, help=f"comma-separated modes (default {DEFAULT_MODES})")
    p.add_argument("--resolution", type=int, default=None,
                   help="high-resolution canvas (default: the checkpoint's shirg_resolution, else 672)")
    p.add_argument("--k", type=int, default=None, help="hi-detail tokens kept (default a third of the grid)")
    p.add_argument("--out", default="runs/demo", help="folder for overlay.png and demo.json (default runs/demo)")
    add_device_options(p)
    add_weight_format_option(p)
    add_generation_options(p)
    # the bundled model was trained with 20 answer slots; 10 steps unmask two slots per step
    p.set_defaults(gen_length=20, steps=10, block_length=20)


def _options(resolution: int, k: int | None):
    from shirg.model.options import VisualOptions

    return VisualOptions(resolution=resolution, k=k)


def run(args: argparse.Namespace) -> int:
    import shirg
    from shirg import bundled
    from shirg.commands._common import default_resolution
    from shirg.errors import resolve_dtype
    from shirg.io import write_json
    from shirg.vision.preprocess import load_image

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes:
        raise ConfigError("--modes is empty; e.g. --modes lowres,full,shirg")
    model_dir = Path(args.model) if args.model else bundled.model_dir()
    adapter = args.adapter or (None if args.model else str(bundled.adapter_dir()))
    expected: list[str] = []
    if args.image is None:
        sample = bundled.demo_sample()
        image_path, question = sample.image, args.question or sample.question
        expected = sample.answers if args.question is None else []
    else:
        if args.question is None:
            raise ConfigError("--image needs --question (what should the model answer about it?)")
        image_path, question = Path(args.image), args.question
    opts = _options(args.resolution or default_resolution(str(model_dir)), args.k)
    for m in modes:
        opts.validate(m)
    args.seed = 0
    gen = generation_kwargs(args)
    image = load_image(image_path)  # a bad image fails before the model load

    device = device_of(args)
    fmt = args.weight_format
    # the format picks bfloat16 where it needs it; an explicit --dtype is checked against it
    dtype = resolve_dtype(args.dtype, device) if fmt == "float" else args.dtype
    base = shirg.load(model_dir, device=device, dtype=dtype, weight_format=fmt)
    adapted = shirg.load(model_dir, device=device, dtype=dtype, adapter=adapter, weight_format=fmt) if adapter else base

    print(f"model {model_dir}" + (f" (shirg mode with adapter {adapter})" if adapter else ""))
    print(f"image {image_path}\nquestion: {question}" + (f"\nexpected: {' | '.join(expected)}" if expected else ""))
    records, panels = [], []
    for m in modes:
        model = adapted if m == "shirg" else base
        model.answer([image], [question], mode=m, options=opts, fallback="lavida", **gen)  # warm-up: first-call costs
        ans = model.answer([image], [question], mode=m, options=opts, fallback="lavida", **gen)[0]
        meta = ans.meta
        times = ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in meta["time_s"].items())
        correct = ans.text.strip().lower() in {e.lower() for e in expected} if expected else None
        mark = "" if correct is None else "  (correct)" if correct else "  (wrong)"
        if meta.get("fallback"):
            mark += f"  [fell back to lavida: {meta['fallback_reason']}]"
        print(f"[{m:>6}] {ans.text!r}{mark}\n         {meta['visual_tokens']} visual tokens; {times}")
        records.append({"mode": m, "answer": ans.text, "expected": expected, "correct": correct,
                        "visual_tokens": meta["visual_tokens"], "time_s": meta["time_s"]}
                       | ({"fallback": meta["fallback"], "fallback_reason": meta["fallback_reason"]}
                          if meta.get("fallback") else {}))
        if ans.selection is not None:
            panels.append((m, ans))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "demo.json", {"model": str(model_dir), "adapter": adapter, "image": str(image_path),
                                   "question": question, "resolution": opts.resolution, "modes": records})
    if panels:
        _overlay(image, panels, opts.resolution, out / "overlay.png", question)
        print(f"wrote {out / 'overlay.png'} (kept tokens) and {out / 'demo.json'}")
    else:
        print(f"wrote {out / 'demo.json'}")
    return 0


def _overlay(image, panels, resolution: int, path: Path, question: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from shirg.io import atomic_write
    from shirg.vision.overlay import draw_overlay

    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 5.3), dpi=100, squeeze=False)
    for ax, (mode, ans) in zip(axes[0], panels, strict=True):
        n = ans.meta["visual_tokens"]
        draw_overlay(image, ans.selection, 0, "", resolution, ans.content_box, ax=ax,
                     title=f"{mode}: {n} visual tokens -> {ans.text!r}")
    fig.suptitle(question, fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)
