"""Speed benchmarks: the roofline per weight format, the verdict table, the GPU suite's table assembly
and its refusal on CPU, ``bench --weight-format a,b`` and ``bench --batch`` on the tiny preset."""

from __future__ import annotations

import json

import pytest

from shirg.bench.analytic import (
    GPUS,
    analyze_mode,
    format_verdicts,
    linear_bytes_per_weight,
    llm_linear_bytes,
    llm_params,
    mode_geometry,
    model_weight_bytes,
    stage_floors,
    verdicts_markdown,
    weight_bytes,
)
from shirg.bench.suite import suite_markdown, suite_row, suite_targets
from shirg.cli import main
from shirg.model.lavida import LavidaConfig
from shirg.presets import preset_config


@pytest.fixture(scope="module")
def cfg():
    return LavidaConfig.from_dict(preset_config("lavida-8b"))


def test_bytes_per_weight_from_the_formats_layout():
    assert linear_bytes_per_weight("bf16", 4096) == 2
    assert linear_bytes_per_weight("int8", 4096) == 1 + 5 / 4096  # fp32 scale + int8 zero per row
    assert linear_bytes_per_weight("int4", 4096) == 0.5 + 4 / 128  # bf16 scale + zero per 128
    with pytest.raises(Exception, match="unknown weight format"):
        linear_bytes_per_weight("int3", 4096)


def test_bf16_floors_equal_the_analytic_model(cfg):
    p = llm_params(cfg.llm)
    lin = llm_linear_bytes(cfg.llm, "bf16")
    assert lin["blocks"] == p["block_matmuls"] * 2 and lin["lm_head"] == p["lm_head"] * 2
    assert model_weight_bytes(cfg, "bf16") == weight_bytes(cfg)
    gpu = GPUS["h100"]
    ref = analyze_mode(cfg, mode_geometry("shirg"), gpu, 30, 32, 64)
    fl = stage_floors(cfg, "shirg", gpu, "bf16", 30, 32, 64)
    assert fl["step_s"] == pytest.approx(ref["stages"]["step_cached"]["seconds"])
    assert fl["prefill_s"] == pytest.approx(ref["stages"]["prefill"]["seconds"])
    assert fl["vision_s"] == pytest.approx(ref["stages"]["vision"]["seconds"])
    assert fl["memory_bytes"] == pytest.approx(ref["memory_total_bytes"])
    assert fl["denoise_s"] == pytest.approx(30 * fl["step_s"])


def test_quantized_floors_scale_with_the_linear_bytes(cfg):
    gpu = GPUS["h200"]
    floors = {f: stage_floors(cfg, "shirg", gpu, f, 30, 32, 64) for f in ("bf16", "int8", "int4")}
    assert floors["int4"]["step_s"] < floors["int8"]["step_s"] < floors["bf16"]["step_s"]
    kv = floors["bf16"]["prefix_tokens"] * 32 * 2 * 4096 * 2  # prefix KV read once per step
    norms = (32 * 2 * 4096 + 4096) * 2
    for f in ("bf16", "int8", "int4"):
        lin = llm_linear_bytes(cfg.llm, f)
        assert floors[f]["step_s"] == pytest.approx((lin["blocks"] + lin["lm_head"] + norms + kv) / gpu.bandwidth)
    # 8B in int4 is about 4 GB of linears + 1 GB embedding + the bf16 tower
    assert 5e9 < floors["int4"]["weight_bytes"] < 7e9


def test_verdicts_follow_the_floors(cfg):
    rows = format_verdicts(cfg, ["bf16", "int8", "int4"], ("h100", "h200"), 30, 12, 32, 64)
    assert len(rows) == 6
    for r in rows:
        assert r["steps_possible"] == (30 * r["step_floor_s"] <= 0.050)
        assert r["expected_steps_possible"] == (12 * r["step_floor_s"] <= 0.050)
        assert r["memory_possible"] == (r["memory_bytes"] <= 8.9e9)
        fl = stage_floors(cfg, "shirg", GPUS[r["gpu"]], r["format"], 30, 32, 64)
        assert r["after_encoding_floor_s"] == pytest.approx(fl["prefill_s"] + 12 * fl["step_s"])
    by = {(r["format"], r["gpu"]): r for r in rows}
    assert not by["bf16", "h200"]["steps_possible"] and not by["bf16", "h100"]["memory_possible"]
    assert by["int4", "h200"]["steps_possible"] and by["int4", "h100"]["memory_possible"]
    text = verdicts_markdown(rows)
    assert "| int4 | h200 |" in text and "12 steps <= 50 ms" in text


def test_analytic_prints_the_format_verdicts(capsys, tmp_path):
    assert main(["bench", "--analytic", "--weight-format", "bf16,int4", "--expected-steps", "10",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Per weight format" in out and "10 steps <= 50 ms" in out
    report = json.loads((tmp_path / "analytic.json").read_text())
    assert [r["format"] for r in report["formats"]] == ["bf16", "bf16", "int4", "int4"]


def _meta(total, prefill, denoise, steps=30, peak=9000.0):
    return {"visual_tokens": 1000, "prompt_length": 1064, "steps_used": steps, "peak_gpu_mb": peak,
            "time_s": {"vision": 0.01, "select": 0.001, "project": 0.001, "prefill": prefill,
                       "denoise": denoise, "total": total}}


def test_suite_rows_targets_and_table(cfg):
    floors = stage_floors(cfg, "shirg", GPUS["h100"], "int4", 30, 32, 64)
    runs = [_meta(0.2, 0.010, 0.040), _meta(0.3, 0.012, 0.044), _meta(0.25, 0.011, 0.042, peak=8000.0)]
    row = suite_row(runs, floors, "int4", "shirg", "prefix")
    assert row["denoise_ms"] == pytest.approx(42.0) and row["prefill_ms"] == pytest.approx(11.0)
    assert row["step_ms"] == pytest.approx(42.0 / 30)
    assert row["step_x_floor"] == pytest.approx(row["step_ms"] / (floors["step_s"] * 1e3))
    assert row["denoise_x_floor"] == pytest.approx(42.0 / (floors["denoise_s"] * 1e3))
    assert row["peak_mb"] == 9000.0
    targets = {t["target"]: t for t in suite_targets([row])}
    after = next(t for name, t in targets.items() if "after the image" in name)
    assert after["value"] == pytest.approx(53.0) and not after["met"]
    memory = next(t for name, t in targets.items() if "8.9 GB" in name)
    assert memory["value"] == pytest.approx(9000 * 2**20 / 1e9) and not memory["met"]
    bf = suite_row(runs, stage_floors(cfg, "shirg", GPUS["h100"], "bf16", 30, 32, 64), "bf16", "shirg", "prefix")
    assert any("1.3x" in t["target"] for t in suite_targets([bf]))
    text = suite_markdown({"device": "NVIDIA H100", "model": "preset lavida-8b", "steps": 30, "gen_length": 32,
                           "repeats": 3, "floor_gpu": "h100", "rows": [row, bf],
                           "train": {"with": 10.0, "without": None},
                           "targets": suite_targets([row, bf]), "notes": ["a note"]})
    assert "| int4 | prefix | shirg |" in text and "| without | - |" in text and "a note" in text


def test_gpu_suite_refuses_on_cpu(capsys):
    assert main(["bench", "--preset", "lavida-8b", "--gpu-suite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs a CUDA GPU" in err[0]


def test_weight_formats_side_by_side_and_batches(tmp_path, capsys):
    out = tmp_path / "speed"
    assert main(["bench", "--preset", "tiny", "--modes", "lowres,full", "--weight-format", "float,int8",
                 "--batch", "1,3", "--repeats", "1", "--steps", "4", "--gen-length", "8", "--out", str(out)]) == 0
    result = json.loads((out / "bench_speed.json").read_text())
    rows = result["rows"]
    assert {(r["format"], r["mode"], r["batch"]) for r in rows} == {
        (f, m, b) for f in ("float", "int8") for m in ("lowres", "full") for b in (1, 3)}
    for r in rows:
        assert r["answers_per_s"] == pytest.approx(r["batch"] / (r["latency_ms"] / 1e3))
        assert r["ms_per_answer"] == pytest.approx(r["latency_ms"] / r["batch"])
        assert r["steps_used"] == 4
        if r["format"] == "int8":
            assert 0.25 <= r["bytes_x_first"] < 0.3
        else:
            assert r["bytes_x_first"] == 1.0
    assert "| int8 | float32 | fixed | full | 3 |" in (out / "bench_speed.md").read_text()


def test_samplers_side_by_side(tmp_path):
    out = tmp_path / "smp"
    assert main(["bench", "--preset", "tiny", "--modes", "lowres", "--samplers", "fixed,threshold",
                 "--threshold", "0.9", "--repeats", "1", "--steps", "4", "--gen-length", "8", "--out", str(out)]) == 0
    rows = json.loads((out / "bench_speed.json").read_text())["rows"]
    assert [r["sampler"] for r in rows] == ["fixed", "threshold"]
    assert rows[0]["steps_used"] == 4 and 1 <= rows[1]["steps_used"] <= 8


def test_bad_speed_options_exit_2(capsys):
    assert main(["bench", "--preset", "tiny", "--batch", "0,4"]) == 2
    assert main(["bench", "--preset", "tiny", "--samplers", "fixed,greedy"]) == 2
    assert main(["bench", "--preset", "tiny", "--weight-format", "float,int9"]) == 2
    assert main(["bench", "--preset", "tiny", "--weight-format", "float,int4", "--dtype", "float32"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and "int4 weights need bfloat16 compute" in err[3]


def test_training_stage_timing_is_opt_in(monkeypatch):
    """Training times nothing by default (no CUDA synchronize per stage); SHIRG_STAGE_TIMING=1 turns the
    stopwatch on, which the GPU suite uses to measure what timing costs a training run."""
    from types import SimpleNamespace

    from shirg.model.profile import Stopwatch
    from shirg.presets import build_preset
    from shirg.train import loss

    model = build_preset("tiny")
    seen = []
    real = loss.lavida_visual
    def spy(m, imgs, mode, watch):
        seen.append(watch)
        return real(m, imgs, mode, watch)

    monkeypatch.setattr(loss, "lavida_visual", spy)
    from PIL import Image

    batch = SimpleNamespace(images=[Image.new("RGB", (64, 64))], modes=None, ks=None, resolutions=[0], questions=["q"])
    monkeypatch.delenv("SHIRG_STAGE_TIMING", raising=False)
    loss.visual_blocks(model, _Batch(batch), "lowres")
    monkeypatch.setenv("SHIRG_STAGE_TIMING", "1")
    loss.visual_blocks(model, _Batch(batch), "lowres")
    assert not isinstance(seen[0], Stopwatch) and seen[0].times == {}
    assert isinstance(seen[1], Stopwatch) and "vision" in seen[1].times


class _Batch:
    def __init__(self, ns) -> None:
        self.__dict__.update(vars(ns))

    def __len__(self) -> int:
        return len(self.images)


def test_suite_rows_from_real_answers_on_cpu(cfg):
    """The suite's per-format loop on the tiny preset (CPU): real answers become rows with floors."""
    from shirg.bench.speed import suite_format
    from shirg.presets import build_preset

    model = build_preset("tiny")
    rows = suite_format(model, cfg, "bf16", ["lowres", "shirg"], ["prefix"], 4, 8, 1, "h100")
    assert [(r["mode"], r["cache"], r["format"]) for r in rows] == [("lowres", "prefix", "bf16"),
                                                                   ("shirg", "prefix", "bf16")]
    for r in rows:
        assert r["steps_used"] == 4 and r["denoise_ms"] > 0 and r["peak_mb"] is None
        assert r["step_floor_ms"] > 0 and r["step_x_floor"] == pytest.approx(r["step_ms"] / r["step_floor_ms"])
    assert suite_format(model, cfg, "bf16", ["shirg"], ["prefix"], 4, 8, 0, "h100") == []
