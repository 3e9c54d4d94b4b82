"""`shirg bench` speed options: weight formats side by side, batched answers, and the GPU suite.

- ``--weight-format float,int8``: the same preset/checkpoint loaded once per format, every mode
  timed per format in one run: weight bytes, per-step and end-to-end time, ratios to the first format.
- ``--batch 1,4,16``: answers per second and per-answer latency per mode and batch size (a batch of
  different images and questions, so prompts of different lengths share one padded batch).
- ``--gpu-suite``: LaViDa-8B's real shapes with random weights on one CUDA GPU (see
  :func:`shirg.bench.speed.gpu_suite`); refuses to run without one.
"""

from __future__ import annotations

import argparse
import copy

from shirg.commands._common import command_line, device_of, generation_kwargs, load_model, visual_options


def add_speed_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("speed: weight formats, batched answers, GPU suite")
    g.add_argument("--weight-format", default=None,
                   help="float | bf16 | int8 | int4 language-model weights (torchao weight-only, quantized at load); "
                        "comma-separated to compare side by side in one run (default float; --analytic: "
                        "bf16,int8,int4 in the verdict table)")
    g.add_argument("--batch", default=None,
                   help="comma-separated batch sizes, e.g. 1,4,16: answers/s and per-answer latency per mode")
    g.add_argument("--samplers", default=None,
                   help="comma-separated samplers to time side by side, e.g. fixed,threshold (default: --sampler)")
    g.add_argument("--expected-steps", type=float, default=None,
                   help="--analytic: denoising steps a sampler is expected to take (e.g. the threshold sampler's "
                        "mean steps used; default --steps)")
    g.add_argument("--gpu-suite", action="store_true",
                   help="with --preset lavida-8b on a CUDA GPU: modes x weight formats at LaViDa-8B's shapes, "
                        "ms per stage and peak memory next to their roofline floors, and shirg train samples/s")


def _speed():
    """The measuring module (torch-backed: imported only when a speed run is asked for)."""
    from shirg.bench import speed

    return speed


def speed_requested(args: argparse.Namespace) -> bool:
    return bool(args.gpu_suite or args.batch is not None or args.samplers is not None
                or len(_speed().parse_formats(args.weight_format)) > 1)


def _loader(args: argparse.Namespace, **overrides):
    def load(fmt: str):
        fargs = copy.copy(args)
        fargs.weight_format = fmt
        for k, v in overrides.items():
            setattr(fargs, k, v)
        return load_model(fargs)

    return load


def run_speed(args: argparse.Namespace) -> int:
    speed = _speed()
    device = device_of(args)
    if args.gpu_suite:
        if (args.preset or "lavida-8b") != "lavida-8b" or args.model:
            raise speed.ConfigError("--gpu-suite measures LaViDa-8B's real shapes: use --preset lavida-8b "
                                    "(random weights)")
        return speed.gpu_suite(_loader(args, preset="lavida-8b", model=None, dtype="bfloat16"), device,
                               args.weight_format, args.modes, args.repeats, args.out, command_line(args))
    formats = speed.parse_formats(args.weight_format)
    batches = speed.parse_batches(args.batch)
    samplers = speed.parse_samplers(args.samplers or args.sampler)
    modes = speed.check_modes(args.modes, "lowres,lavida,full,shirg")
    if args.repeats < 1:
        raise speed.ConfigError("--repeats must be at least 1")
    opts = visual_options(args)
    for m in modes:
        opts.validate(m)
    gen = {**generation_kwargs(args), "options": opts, "dtype": args.dtype}
    return speed.speed_run(_loader(args), formats, modes, batches, samplers, gen, args.threshold, args.repeats,
                           device, args.image, command_line(args), args.out)
