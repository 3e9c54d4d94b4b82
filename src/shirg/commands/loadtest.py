"""`shirg loadtest`: send N chat requests to a running `shirg serve` with C at a time; print the numbers.

    shirg loadtest --url http://127.0.0.1:8000 --requests 200 --concurrency 8 [--image IMG --question Q]

Prints throughput, p50/p95/p99 latency of the answered requests, errors by HTTP status, the
server's batch sizes and its RSS before and after (read from the server's /metrics), and writes
them as JSON with --json. Bounded: at most --requests requests and --max-seconds of sending.
Uses only the standard library, so it runs without the [serve] extra.
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import math
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from shirg import bundled
from shirg.errors import ConfigError, ImageError
from shirg.io import write_json

HELP = "load-test a running `shirg serve`: throughput, latency percentiles, errors, server RSS"
MAX_REQUESTS = 100_000
MAX_CONCURRENCY = 256


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", required=True, help="the server's base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--requests", type=int, required=True, help=f"requests to send (1..{MAX_REQUESTS})")
    p.add_argument("--concurrency", type=int, default=1, help=f"requests in flight at once (1..{MAX_CONCURRENCY})")
    p.add_argument("--image", default=None, help="image file (default: the bundled EntityGrid sample)")
    p.add_argument("--question", default=None, help="the question (default: the bundled sample's)")
    p.add_argument("--model", default="shirg", help="model (mode) to ask, e.g. shirg or shirg:lowres (default shirg)")
    p.add_argument("--warmup", type=int, default=0,
                   help="requests sent first at the same concurrency, not counted (default 0)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request (default 120)")
    p.add_argument("--max-seconds", type=float, default=3600.0,
                   help="stop sending new requests after this many seconds (default 3600)")
    p.add_argument("--api-key", default=None, help="sent as 'Authorization: Bearer KEY'")
    p.add_argument("--json", default=None, help="write the results as JSON")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _base_url(url: str) -> str:
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(f"--url must be an http(s) URL like http://127.0.0.1:8000, got {url!r}")
    path = parsed.path.rstrip("/")
    path = path[: -len("/v1")] if path.endswith("/v1") else path
    return urllib.parse.urlunparse((parsed.scheme, parsed.netloc, path, "", "", ""))


def _request(url: str, body: bytes | None, headers: dict[str, str], timeout: float) -> tuple[int | str, bytes]:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - http(s) checked in _base_url
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except TimeoutError:
        return "timeout", b""
    except (urllib.error.URLError, ConnectionError, OSError) as e:
        reason = getattr(e, "reason", e)
        return ("timeout" if isinstance(reason, TimeoutError) else "connection"), b""


def server_metrics(base: str, headers: dict[str, str], timeout: float = 10.0) -> dict | None:
    """The server's /metrics (or /healthz) JSON, or None when it has neither."""
    for path in ("/metrics", "/healthz"):
        status, body = _request(base + path, None, headers, timeout)
        if status == 200:
            try:
                return json.loads(body)
            except ValueError:
                return None
    return None


def _payload(args: argparse.Namespace) -> bytes:
    if args.image is None:
        sample = bundled.demo_sample()
        path, question = sample.image, args.question or sample.question
    else:
        if args.question is None:
            raise ConfigError("--image needs --question (what should the model answer about it?)")
        path, question = Path(args.image), args.question
    from PIL import Image, UnidentifiedImageError

    if not Path(path).is_file():
        raise ImageError(f"image {path} does not exist")
    try:  # a missing or unreadable image fails here, with a one-line error
        with Image.open(path) as img:
            img.load()
            kind = {"JPEG": "jpeg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp"}.get(img.format or "")
            if kind is None:  # another format Pillow reads: sent as PNG
                import io

                buf = io.BytesIO()
                img.convert("RGB").save(buf, format="PNG")
                data, kind = buf.getvalue(), "png"
            else:
                data = Path(path).read_bytes()
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ImageError(f"cannot read image {path}: {e}; is it a valid PNG/JPEG file?") from e
    url = f"data:image/{kind};base64,{base64.b64encode(data).decode('ascii')}"
    return json.dumps({"model": args.model, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": question}]}]}).encode()


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.requests <= MAX_REQUESTS:
        raise ConfigError(f"--requests must be 1..{MAX_REQUESTS}, got {args.requests}")
    if not 1 <= args.concurrency <= MAX_CONCURRENCY:
        raise ConfigError(f"--concurrency must be 1..{MAX_CONCURRENCY}, got {args.concurrency}")
    if args.warmup < 0 or args.warmup > MAX_REQUESTS:
        raise ConfigError(f"--warmup must be 0..{MAX_REQUESTS}, got {args.warmup}")
    if not args.timeout > 0 or not args.max_seconds > 0:
        raise ConfigError("--timeout and --max-seconds must be positive")
    base = _base_url(args.url)
    body = _payload(args)
    headers = {"Content-Type": "application/json"}
    if args.api_key:
        headers["Authorization"] = f"Bearer {args.api_key}"
    chat = base + "/v1/chat/completions"

    before = server_metrics(base, headers)
    if before is None:
        raise ConfigError(f"no shirg server answers at {base} (GET /metrics and /healthz failed); "
                          "start one with `shirg serve`")
    if args.warmup:  # at the same concurrency, so the server reaches the batch sizes of the run
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            list(pool.map(lambda _: _request(chat, body, headers, args.timeout), range(args.warmup)))
    before = server_metrics(base, headers) or before

    lock = threading.Lock()
    issued = 0
    latencies: list[float] = []
    statuses: collections.Counter = collections.Counter()
    answers: collections.Counter = collections.Counter()
    start = time.perf_counter()
    deadline = start + args.max_seconds

    def worker() -> None:
        nonlocal issued
        while True:
            with lock:
                if issued >= args.requests or time.perf_counter() > deadline:
                    return
                issued += 1
            t0 = time.perf_counter()
            status, reply = _request(chat, body, headers, args.timeout)
            dt = time.perf_counter() - t0
            text = None
            if status == 200:
                try:
                    text = json.loads(reply)["choices"][0]["message"]["content"]
                except (ValueError, KeyError, IndexError, TypeError):
                    status = "bad-reply"
            with lock:
                statuses[status] += 1
                if status == 200:
                    latencies.append(dt)
                    answers[text] += 1

    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        for _ in range(args.concurrency):
            pool.submit(worker)
    wall = time.perf_counter() - start
    after = server_metrics(base, headers)

    ok = statuses.get(200, 0)
    errors = {str(k): v for k, v in statuses.items() if k != 200}
    result = {
        "url": base, "model": args.model, "requests": issued, "concurrency": args.concurrency,
        "warmup": args.warmup, "wall_s": wall, "ok": ok, "errors": errors,
        "throughput_rps": ok / wall if wall > 0 else 0.0,
        "latency_s": {f"p{q}": percentile(latencies, q) for q in (50, 95, 99)} if latencies else {},
        "answers": dict(answers.most_common(5)),
        "server_rss_bytes_before": (before or {}).get("rss_bytes"),
        "server_rss_bytes_after": (after or {}).get("rss_bytes"),
        "server_batches_before": (before or {}).get("batcher"),
        "server_batches_after": (after or {}).get("batcher"),
        "stopped_by_time": issued < args.requests,
    }
    _print(result)
    if args.json:
        write_json(args.json, result)
    return 0


def _batch_summary(before: dict | None, after: dict | None) -> str:
    if not before or not after:
        return "n/a"
    b, a = before.get("batch_sizes", {}), after.get("batch_sizes", {})
    diff = {int(k): a.get(k, 0) - b.get(k, 0) for k in a}
    diff = {k: v for k, v in sorted(diff.items()) if v}
    batches = sum(diff.values())
    if not batches:
        return "none"
    mean = sum(k * v for k, v in diff.items()) / batches
    return f"{batches} batches, mean size {mean:.2f} ({', '.join(f'{k}: {v}' for k, v in diff.items())})"


def _print(r: dict) -> None:
    lat = r["latency_s"]
    print(f"{r['url']}  model {r['model']}  {r['requests']} requests, concurrency {r['concurrency']}"
          + (f", {r['warmup']} warm-up" if r["warmup"] else "")
          + ("  (stopped by --max-seconds)" if r["stopped_by_time"] else ""))
    print(f"  ok {r['ok']}  errors {sum(r['errors'].values())}"
          + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(r['errors'].items()))})" if r["errors"] else ""))
    print(f"  wall {r['wall_s']:.2f} s  throughput {r['throughput_rps']:.2f} req/s")
    if lat:
        print(f"  latency p50 {lat['p50'] * 1e3:.0f} ms  p95 {lat['p95'] * 1e3:.0f} ms  p99 {lat['p99'] * 1e3:.0f} ms")
    print(f"  server batches: {_batch_summary(r['server_batches_before'], r['server_batches_after'])}")
    b, a = r["server_rss_bytes_before"], r["server_rss_bytes_after"]
    if b and a:
        print(f"  server RSS before {b / 2**20:.1f} MiB  after {a / 2**20:.1f} MiB  growth {100 * (a - b) / b:+.2f} %")
    else:
        print("  server RSS: not reported by the server")
    if r["answers"]:
        print("  answers: " + ", ".join(f"{k!r} x{v}" for k, v in r["answers"].items()))
