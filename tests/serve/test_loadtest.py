"""`shirg serve` as a real subprocess on 127.0.0.1 (free port), and `shirg loadtest` against it."""

from __future__ import annotations

import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from shirg.cli import main  # noqa: E402
from shirg.commands.loadtest import percentile  # noqa: E402


@pytest.fixture(scope="module")
def served():
    """`shirg serve` (bundled model, an API key from the environment) on a port picked by the OS."""
    env = {**os.environ, "SHIRG_API_KEY": "k3y", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "shirg.cli", "serve", "--port", "0", "--no-warmup",
                             "--modes", "lowres,shirg", "--max-batch", "4", "--batch-wait-ms", "20"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: queue.Queue = queue.Queue()
    log: list[str] = []

    def pump():
        for line in proc.stdout:
            log.append(line)
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    url = None
    while url is None:
        try:
            line = lines.get(timeout=300)
        except queue.Empty:
            break
        if line is None:
            break
        m = re.search(r"open (http://127\.0\.0\.1:\d+)/", line)
        url = m.group(1) if m else None
    if url is None:
        proc.kill()
        pytest.fail("shirg serve did not start:\n" + "".join(log))
    yield url, proc
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_serve_command_binds_loopback_and_loadtest_reports(served, tmp_path, capsys):
    url, proc = served
    assert proc.poll() is None
    out = tmp_path / "load.json"
    assert main(["loadtest", "--url", url, "--requests", "8", "--concurrency", "4", "--api-key", "k3y",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ok 8  errors 0" in text and "throughput" in text and "p99" in text and "server RSS before" in text
    r = json.loads(out.read_text())
    assert r["ok"] == 8 and r["errors"] == {} and r["requests"] == 8
    assert r["answers"] == {"6": 8}  # the bundled model reads the demo digit in shirg mode
    lat = r["latency_s"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= r["wall_s"]
    assert r["server_rss_bytes_before"] > 0 and r["server_rss_bytes_after"] > 0
    after = r["server_batches_after"]
    assert after["completed"] - r["server_batches_before"]["completed"] == 8

    # without the key every request is refused (401), and counted by status
    assert main(["loadtest", "--url", url + "/v1/", "--requests", "3", "--concurrency", "2",
                 "--model", "shirg:lowres"]) == 0
    text = capsys.readouterr().out
    assert "ok 0  errors 3 (401: 3)" in text


def test_loadtest_is_bounded_by_time(served, capsys):
    url, _ = served
    assert main(["loadtest", "--url", url, "--requests", "1000", "--concurrency", "2", "--api-key", "k3y",
                 "--max-seconds", "0.5", "--model", "shirg:lowres"]) == 0
    text = capsys.readouterr().out
    n = int(re.search(r"(\d+) requests, concurrency 2", text).group(1))
    assert 1 <= n < 1000 and "stopped by --max-seconds" in text


def test_loadtest_bad_input_exits_2(tmp_path, capsys):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    cases = [
        (["--url", "ftp://127.0.0.1", "--requests", "2"], "http(s) URL"),
        (["--url", closed, "--requests", "0"], "--requests must be"),
        (["--url", closed, "--requests", "2", "--concurrency", "999"], "--concurrency must be"),
        (["--url", closed, "--requests", "2", "--image", str(tmp_path / "none.png"), "--question", "q"],
         "does not exist"),
        (["--url", closed, "--requests", "2", "--image", __file__], "--question"),
        (["--url", closed, "--requests", "2"], "no shirg server answers"),
    ]
    for argv, needle in cases:
        assert main(["loadtest", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1, (argv, err)


def test_serve_bad_options_exit_2(capsys):
    for argv, needle in [(["--modes", " , "], "--modes is empty"), (["--port", "70000"], "--port"),
                         (["--max-batch", "0"], "--max-batch"), (["--batch-wait-ms", "-1"], "--batch-wait-ms"),
                         (["--modes", "magic"], "unknown mode"), (["--k", "100000"], "larger than"),
                         (["--steps", "7", "--gen-length", "20", "--block-length", "5"], "steps"),
                         (["--model", "/nonexistent/ckpt"], "")]:
        assert main(["serve", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1, (argv, err)


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50 and percentile(values, 95) == 95 and percentile(values, 99) == 99
    assert percentile([3.0], 99) == 3.0 and percentile([2.0, 1.0], 50) == 1.0
