"""`shirg bench` (measured and --analytic) and `shirg bench-select`. No test asserts a timing."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from PIL import Image

from shirg.bench.analytic import (
    GPUS,
    analyze,
    kv_bytes_per_token,
    llm_params,
    mode_geometry,
    projector_params,
    step_floor_s,
    vision_params,
)
from shirg.cli import main
from shirg.memory import PeakRss
from shirg.model.lavida import LavidaConfig, LavidaModel
from shirg.model.options import MODES
from shirg.presets import preset_config

MiB = 2**20
# LaViDa-LLaDA-8B by hand: 32 blocks of q, k, v, out (4 x 4096^2) + gate, up, down (3 x 4096 x 12288)
# + 2 RMSNorm weights; wte and the untied LM head are 126464 x 4096 each; ln_f 4096.
BLOCKS = 32 * (4 * 4096**2 + 3 * 4096 * 12288 + 2 * 4096)
TABLE = 126464 * 4096
LLM_PARAMS = BLOCKS + 2 * TABLE + 4096
BLOCKS_MATMUL = 32 * (4 * 4096**2 + 3 * 4096 * 12288)


@pytest.fixture(scope="module")
def cfg_8b() -> LavidaConfig:
    return LavidaConfig.from_dict(preset_config("lavida-8b"))


def test_llada_8b_params_match_hand_count_and_the_model(cfg_8b):
    p = llm_params(cfg_8b.llm)
    assert (p["blocks"], p["embedding"], p["lm_head"]) == (6_979_584_000, 517_996_544, 517_996_544)
    assert p["block_matmuls"] == BLOCKS_MATMUL
    assert p["total"] == LLM_PARAMS == 8_015_581_184
    assert f"{2 * p['total'] / 1e9:.2f}" == "16.03"  # GB in bf16, the number
    with torch.device("meta"):
        model = LavidaModel(cfg_8b)
    core = model.model
    assert sum(t.numel() for t in core.transformer.parameters()) == p["total"]
    assert sum(t.numel() for t in core.vision_tower.parameters()) == vision_params(cfg_8b.vision) == 397_747_744
    assert sum(t.numel() for t in core.mm_projector.parameters()) == projector_params(1152, 4096) == 21_504_000


def test_kv_bytes_and_token_geometry(cfg_8b):
    assert kv_bytes_per_token(cfg_8b.llm) == 32 * 2 * 4096 * 2 == MiB // 2
    assert 912 * kv_bytes_per_token(cfg_8b.llm) == 456 * MiB
    tokens = {m: mode_geometry(m).visual_tokens for m in ("lowres", "lavida", "full", "shirg", "pool", "uniform")}
    assert tokens == {"lowres": 197, "lavida": 1008, "full": 2304, "shirg": 912, "pool": 928, "uniform": 912}
    assert mode_geometry("lavida").views == 5 and mode_geometry("shirg").scored_tokens == 2304


def test_roofline_numbers_for_h100(cfg_8b):
    h100 = GPUS["h100"]
    floor = step_floor_s(cfg_8b, h100)
    assert floor["step_weight_bytes"] == 2 * (BLOCKS + TABLE + 4096)  # blocks + LM head + ln_f; wte is a gather
    assert floor["step_floor_s"] == pytest.approx(14.995e9 / 3.35e12, rel=1e-3)  # 4.48 ms
    assert round(floor["llm_weights_over_bandwidth_s"] * 1e3, 1) == 4.8  # the spec's 16 GB / 3.35 TB/s
    assert 30 * floor["llm_weights_over_bandwidth_s"] == pytest.approx(0.1435, abs=5e-4)
    report = analyze(cfg_8b, ["lowres", "full", "shirg"], h100, steps=30, answer=32, text_tokens=64)
    shirg = {r["mode"]: r for r in report["rows"]}["shirg"]
    assert shirg["prefix_tokens"] == 976
    step = shirg["stages"]["step_cached"]
    assert step["bytes"] == floor["step_weight_bytes"] + 976 * MiB // 2
    assert step["bound"] == "memory" and step["seconds"] == pytest.approx(step["bytes"] / 3.35e12)
    prefill = shirg["stages"]["prefill"]
    assert prefill["flops"] == 2 * BLOCKS_MATMUL * 976 + 4 * 32 * 976**2 * 4096
    assert prefill["seconds"] == pytest.approx(prefill["flops"] / 989e12)
    vision = shirg["stages"]["vision"]
    siglip = 3 * 14 * 14 * 1152 + 26 * (4 * 1152**2 + 2 * 1152 * 4304)
    assert vision["flops"] == 2 * siglip * 2304 + 4 * 26 * 2304**2 * 1152
    assert shirg["kv_bytes"] == 976 * MiB // 2
    assert shirg["memory_total_bytes"] == shirg["weight_bytes"] + shirg["kv_bytes"] + shirg["activation_bytes"]
    assert shirg["latency_cached_s"] > 30 * floor["step_floor_s"]


def test_analytic_cli_flags_the_50_ms_claim(tmp_path, capsys):
    assert main(["bench", "--analytic", "--gpu", "h100", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "analytic.json").read_text())
    md = (tmp_path / "analytic.md").read_text()
    assert [r["mode"] for r in report["rows"]] == ["lowres", "lavida", "full", "shirg", "pool"]
    steps, memory = report["claims"]
    assert steps["claimed_s"] == 0.05 and steps["below_floor"] and steps["floor_s"] > 0.13
    assert not memory["possible_in_bf16"] and memory["weight_bytes"] > 16e9
    assert "below the physical floor" in md and "impossible without weight quantization" in md
    assert "below the physical floor" in printed
    targets = {(t["target"], t["metric"]): t for t in report["targets"]}
    assert targets[("latency shirg <= 0.66x full", "latency_cached")]["met"] is False  # weight streaming
    assert targets[("memory shirg <= 0.45x full", "memory_act_kv")]["predicted"] < 0.45
    assert main(["bench", "--analytic", "--gpu", "a100", "--modes", "shirg", "--out", str(tmp_path / "a")]) == 0
    a100 = json.loads((tmp_path / "a" / "analytic.json").read_text())
    assert a100["step_floor_s"] == pytest.approx(steps["floor_s"] / 30 * 3.35 / 2.039)


def test_unknown_mode_preset_gpu_exit_2(tmp_path, capsys):
    assert main(["bench", "--preset", "tiny", "--modes", "lowres,magic"]) == 2
    assert "valid modes: lavida, lowres, full, shirg, uniform" in capsys.readouterr().err
    assert main(["bench", "--analytic", "--modes", "magic"]) == 2
    assert "valid modes: lavida, lowres" in capsys.readouterr().err
    for flag, value in (("--preset", "huge"), ("--gpu", "tpu")):
        with pytest.raises(SystemExit) as exit_info:
            main(["bench", flag, value])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "invalid choice" in err and ("'cpu-small'" in err or "'h200'" in err)
    snap = tmp_path / "snap.pickle"
    assert main(["bench", "--preset", "tiny", "--device", "cpu", "--memory-snapshot", str(snap)]) == 2
    assert "--memory-snapshot needs a CUDA device" in capsys.readouterr().err and not snap.exists()


def test_bench_tiny_runs_every_mode_and_writes_outputs(tmp_path, capsys):
    out = tmp_path / "bench"
    args = ["bench", "--preset", "tiny", "--modes", ",".join(MODES), "--steps", "2", "--gen-length", "4",
            "--repeats", "1", "--resolution", "336", "--device", "cpu", "--out", str(out)]
    assert main(args) == 0
    result = json.loads((out / "bench.json").read_text())
    rows = {r["mode"]: r for r in result["rows"]}
    assert list(rows) == list(MODES)
    for mode in ("lowres", "full", "shirg", "pool", "uniform"):  # the analytic model's geometry is the real one
        assert rows[mode]["visual_tokens"] == mode_geometry(mode, 336).visual_tokens, mode
    for r in rows.values():
        assert {"total_vs_lowres", "total_vs_full", "kv_vs_lowres", "kv_vs_full"} <= set(r)
        assert set(r["time_s"]) == {"preprocess", "vision", "select", "project", "prefill", "denoise", "total"}
        assert r["time_s"]["total"]["min"] <= r["time_s"]["total"]["median"] <= r["time_s"]["total"]["max"]
        assert r["peak_mb"] > 0 and isinstance(r["act_kv_mb"], float)
    assert rows["lowres"]["total_vs_lowres"] == 1.0 and rows["full"]["total_vs_full"] == 1.0
    kv = {m: rows[m]["kv_cache_bytes"] for m in ("lowres", "full")}
    assert rows["full"]["kv_vs_lowres"] == pytest.approx(kv["full"] / kv["lowres"])
    assert "select_pct_of_vision" in rows["shirg"] and "select_pct_of_vision" not in rows["lowres"]
    names = {t["target"] for t in result["targets"]}
    assert {"latency shirg <= 1.35x lowres", "latency shirg <= 0.66x full"} <= names
    assert "shirg: select < 2 % of vision (CPU)" in names
    assert all(isinstance(t["met"], bool) for t in result["targets"])
    md = (out / "bench.md").read_text()
    assert "| x lowres | x full |" in md and "select % vision" in md and "act+KV MiB" in md
    assert all(f"| {m} |" in md for m in MODES)
    with Image.open(out / "bench.png") as img:
        img.verify()
        assert img.format == "PNG"
    assert "| shirg |" in capsys.readouterr().out


def test_peak_rss_sampler_sees_a_transient_allocation():
    with PeakRss(interval=0.001) as rss:
        block = np.ones(64 * MiB // 8)  # 64 MiB, touched
        time.sleep(0.05)
        del block
    assert rss.peak - rss.before > 48 * MiB


def test_bench_select_small_tower_writes_json(tmp_path, capsys):
    path = tmp_path / "sel.json"
    assert main(["bench-select", "--tower", "small", "--resolution", "336", "--repeats", "1", "--device", "cpu",
                 "--json", str(path)]) == 0
    result = json.loads(path.read_text())
    assert (result["tokens"], result["k"], result["resolution"]) == (576, 192, 336)
    assert [(r["strategy"], r["score"], r["sim_stride"], r["source"]) for r in result["rows"]] == [
        ("shirg", "saliency", 1, "saliency"), ("shirg", "text", 1, "text"),
        ("shirg", "text + relevance head", 1, "text"), ("shirg", "text, 2 x 2 cells", 2, "text"),
        ("shirg", "text + head, 2 x 2 cells", 2, "text"), ("shirg", "saliency + tower head", 1, "head")]
    for r in result["rows"]:
        assert r["select_ms"] > 0 and r["ratio_to_tower"] == pytest.approx(r["select_ms"] / result["tower_ms"])
        assert isinstance(r["meets_target"], bool)
    assert "2 %" in result["target"] and "% of tower" in capsys.readouterr().out
