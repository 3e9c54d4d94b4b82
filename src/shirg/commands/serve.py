"""`shirg serve`: a comparison page and an OpenAI-compatible API in one process (FastAPI + uvicorn).

    shirg serve                                  # the bundled small model on http://127.0.0.1:8000
    shirg serve --model DIR [--adapter DIR] [--modes lowres,full,shirg] [--port 8000]
    shirg serve --max-batch 8 --batch-wait-ms 10 --max-queue 64 --api-key KEY

Needs the ``[serve]`` extra (``pip install 'shirg[serve]'``). Binds 127.0.0.1 unless --host says
otherwise. See docs/serve.md for the API, the limits and the load test.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from pathlib import Path

from shirg import bundled
from shirg.commands._common import (
    add_device_options,
    add_generation_options,
    add_visual_options,
    device_of,
    visual_options,
)
from shirg.errors import ConfigError, resolve_dtype

HELP = "serve a page comparing modes and an OpenAI-compatible API (needs the [serve] extra)"
DEFAULT_MODES = "lowres,full,shirg"
EXTRA_HINT = "pip install 'shirg[serve]'"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="LaViDa checkpoint folder (default: the bundled small model)")
    p.add_argument("--adapter", default=None, metavar="DIR",
                   help="adapter used by the shirg mode (default: the bundled one with the bundled model)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--modes", default=DEFAULT_MODES, help=f"comma-separated modes served (default {DEFAULT_MODES})")
    g = p.add_argument_group("serving")
    g.add_argument("--max-batch", type=int, default=8, help="requests per batched model call (default 8)")
    g.add_argument("--batch-wait-ms", type=float, default=10.0,
                   help="longest wait for more requests to join a batch (default 10 ms)")
    g.add_argument("--max-queue", type=int, default=64, help="waiting requests before 503 (default 64)")
    g.add_argument("--request-timeout", type=float, default=120.0, help="seconds per request before 504 (default 120)")
    g.add_argument("--max-body-mb", type=float, default=16.0, help="request body limit in MiB (default 16)")
    g.add_argument("--max-image-mb", type=float, default=8.0, help="decoded image limit in MiB (default 8)")
    g.add_argument("--max-pixels", type=int, default=4096 * 4096, help="image pixel limit (default 4096*4096)")
    g.add_argument("--max-tokens", type=int, default=256, help="largest max_tokens a request may ask (default 256)")
    g.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' (default: $SHIRG_API_KEY if set, else no key)")
    g.add_argument("--no-warmup", action="store_true", help="skip the one warm-up answer per mode at start")
    add_device_options(p)
    add_generation_options(p)
    add_visual_options(p)
    # None: the bundled model's 20 answer slots / 10 steps, another checkpoint's 32 / 32
    p.set_defaults(gen_length=None, steps=None)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{name} must be positive, got {value}")


def run(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as e:
        raise ConfigError(f"shirg serve needs the [serve] extra ({e.name or 'fastapi'} is missing): "
                          f"{EXTRA_HINT}") from e
    from shirg.serve import app as web

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes:
        raise ConfigError("--modes is empty; e.g. --modes lowres,full,shirg")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be 0..65535, got {args.port}")
    for name in ("max_batch", "max_queue", "request_timeout", "max_body_mb", "max_image_mb", "max_pixels",
                 "max_tokens"):
        _positive("--" + name.replace("_", "-"), getattr(args, name))
    if args.batch_wait_ms < 0:
        raise ConfigError(f"--batch-wait-ms must be >= 0, got {args.batch_wait_ms}")
    is_bundled = args.model is None
    model_dir = bundled.model_dir() if is_bundled else Path(args.model)
    adapter = args.adapter or (str(bundled.adapter_dir()) if is_bundled else None)
    args.model = str(model_dir)  # visual_options reads the checkpoint's resolution from it
    opts = visual_options(args)
    gen_length = args.gen_length or (20 if is_bundled else 32)
    steps = args.steps or (10 if is_bundled else 32)
    defaults = web.Defaults(gen_length=gen_length, steps=steps, block_length=args.block_length or min(32, gen_length),
                        schedule=args.schedule, kv_cache=args.kv_cache)
    limits = web.Limits(max_body_bytes=int(args.max_body_mb * 2**20), max_image_bytes=int(args.max_image_mb * 2**20),
                    max_pixels=args.max_pixels, max_tokens=args.max_tokens)
    api_key = args.api_key or os.environ.get("SHIRG_API_KEY") or None
    if not _is_loopback(args.host) and api_key is None:
        print(f"warning: binding {args.host} without --api-key: anyone who can reach this address can use the model")

    device = device_of(args)
    dtype = resolve_dtype(args.dtype, device)
    engine = web.Engine.load(model_dir, adapter, modes, opts, defaults, limits, device, dtype)
    # validates generation settings before the server starts
    for m in modes:
        try:
            engine.settings(m)
        except web.RequestError as e:
            raise ConfigError(e.message) from e
    sample = bundled.demo_sample() if (bundled.ROOT / "demo.json").exists() else None
    if not args.no_warmup and sample is not None:
        engine.warm_up(sample.image, sample.question)
    app = web.create_app(engine, max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms, max_queue=args.max_queue,
                     request_timeout_s=args.request_timeout, api_key=api_key, example=sample)
    print(f"serving {engine.description}")
    print(f"models: {', '.join(web.model_id(m) for m in modes)}; max batch {args.max_batch}, "
          f"batch wait {args.batch_wait_ms:g} ms, queue {args.max_queue}" + ("; API key required" if api_key else ""))
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    _announce(server, args.host)
    server.run()
    return 0


def _announce(server, host: str) -> None:
    """Print the URL once uvicorn is listening (with --port 0 the port is only known then)."""
    original = server.startup

    async def startup(sockets=None):
        await original(sockets=sockets)
        for s in server.servers:
            for sock in s.sockets:
                port = sock.getsockname()[1]
                shown = f"[{host}]" if ":" in host else host
                print(f"open http://{shown}:{port}/ (API: http://{shown}:{port}/v1)", flush=True)
                return

    server.startup = startup
