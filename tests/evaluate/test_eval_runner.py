"""The side-by-side runner on the tiny checkpoint: outputs, resume after a crash, data-parallel shards."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import shirg
from shirg.cli import main
from shirg.entitygrid import EntityGridConfig, generate
from shirg.errors import ConfigError
from shirg.evaluate.data import load_samples
from shirg.evaluate.modes import ABLATIONS, build_modes
from shirg.evaluate.runner import PRED_FILE, EvalSettings, evaluate, rank_file, read_jsonl, run_shard
from shirg.model.options import VisualOptions
from shirg.testing import write_tiny_lavida_checkpoint

GEN = dict(gen_length=8, steps=4, block_length=8, temperature=0.0, schedule="uniform", seed=0, kv_cache="native")
OPTS = VisualOptions(resolution=336)  # G = 24: small and quick


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    ckpt = write_tiny_lavida_checkpoint(root / "tiny")
    generate(root / "eg", 6, seed=0, cfg=EntityGridConfig(size=336, rows=4, cols=4, label_px=10))
    return {"root": root, "ckpt": ckpt, "data": root / "eg", "model": shirg.load(ckpt)}


def _settings() -> EvalSettings:
    return EvalSettings(task="entitygrid", gen=dict(GEN), warmup=0)


def _modes():
    return build_modes(["lowres", "shirg"], OPTS)


def _table(out: Path) -> list[dict]:
    """The summary without timings and memory (those differ between runs)."""
    rows = json.loads((out / "summary.json").read_text())["rows"]
    drop = ("latency", "memory", "peak")
    return [{k: v for k, v in r.items() if not k.startswith(drop) and "_x_" not in k} for r in rows]


def _preds(out: Path) -> list[tuple]:
    return [(r["id"], r["mode"], r["prediction"], r["scores"], r.get("evidence_recall"))
            for r in read_jsonl(out / PRED_FILE)]


@pytest.fixture(scope="module")
def complete(world):
    out = world["root"] / "complete"
    samples = load_samples("entitygrid", world["data"])
    summary = evaluate(world["model"], samples, _modes(), out, _settings(), overlays=1, progress=False)
    return out, summary


def test_two_mode_run_writes_every_output(complete):
    out, summary = complete
    for name in ("predictions.jsonl", "run.json", "summary.md", "summary.csv", "summary.json",
                 "score_vs_latency.png", "score_vs_tokens.png", "overlays.png"):
        assert (out / name).is_file(), name
    for png in ("score_vs_latency.png", "overlays.png"):
        assert Image.open(out / png).size[0] > 100
    recs = read_jsonl(out / PRED_FILE)
    assert [(r["id"], r["mode"]) for r in recs[:3]] == [("eg0-000000", "lowres"), ("eg0-000000", "shirg"),
                                                         ("eg0-000001", "lowres")]
    assert len(recs) == 12 and not list(out.glob("predictions.rank*"))
    rows = {r["mode"]: r for r in summary["rows"]}
    assert rows["lowres"]["visual_tokens"] == 197 and rows["shirg"]["visual_tokens"] == 36 + 192
    assert rows["lowres"]["n"] == rows["shirg"]["n"] == 6
    assert rows["lowres"]["evidence_recall"] is None and 0 <= rows["shirg"]["evidence_recall"] <= 100
    assert rows["shirg"]["delta_vs_lowres"] == pytest.approx(rows["shirg"]["f1"] - rows["lowres"]["f1"])
    assert rows["lowres"]["fallbacks"] == 0 and rows["shirg"]["latency_median_s"] > 0
    # CPU: the RSS sampled during each request, not the process-lifetime peak (which depends on mode order)
    assert {r["memory_kind"] for r in recs} == {"request_peak_rss"} and summary["memory"]["kind"] == "request_peak_rss"
    assert rows["shirg"]["memory_x_lowres"] > 0
    assert {"acc_recognition", "acc_position", "acc_counting", "acc_reading"} <= set(rows["shirg"])
    md = (out / "summary.md").read_text()
    assert "| lowres |" in md and "evidence_recall" in md and "peak RSS MiB per request (CPU)" in md
    csv_head = (out / "summary.csv").read_text().splitlines()[0].split(",")
    assert csv_head[:3] == ["mode", "n", "answered"] and "latency_median_s" in csv_head


def test_interrupted_run_resumes_to_the_same_table(world, complete):
    out = world["root"] / "interrupted"
    samples = load_samples("entitygrid", world["data"])
    seen = []

    def crash(rec):
        seen.append(rec)
        if len(seen) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate(world["model"], samples, _modes(), out, _settings(), overlays=0, progress=False, on_record=crash)
    shard = rank_file(out, 0)
    assert len(read_jsonl(shard)) == 5  # every finished answer was on disk at the crash
    with open(shard, "a") as f:
        f.write('{"id": "eg0-000005", "mode": "shi')  # a line cut by the crash
    again = []
    evaluate(world["model"], samples, _modes(), out, _settings(), overlays=0, progress=False, on_record=again.append)
    assert len(again) == 7  # only the missing pairs were answered
    assert _table(out) == _table(complete[0])
    assert _preds(out) == _preds(complete[0])
    before = []
    evaluate(world["model"], samples, _modes(), out, _settings(), overlays=0, progress=False, on_record=before.append)
    assert before == []  # a finished run answers nothing more


def test_two_ranks_split_the_samples_and_merge(world, complete):
    out = world["root"] / "ranks"
    samples = load_samples("entitygrid", world["data"], limit=4)
    settings = _settings()
    for rank in (1, 0):  # the order ranks finish in does not matter
        run_shard(world["model"], samples, _modes(), out, settings, rank=rank, world=2, progress=False)
    ids = {r: {x["id"] for x in read_jsonl(rank_file(out, r))} for r in (0, 1)}
    assert ids[0] == {"eg0-000000", "eg0-000002"}
    assert ids[1] == {"eg0-000001", "eg0-000003"}
    calls = []
    summary = evaluate(world["model"], samples, _modes(), out, settings, rank=0, world=2,
                       barrier=lambda: calls.append(1), overlays=0, progress=False)
    assert calls == [1] and not list(out.glob("predictions.rank*"))
    first4 = {s.id for s in samples}
    assert _preds(out) == [p for p in _preds(complete[0]) if p[0] in first4]
    assert [r["n"] for r in summary["rows"]] == [4, 4]


def test_resume_refuses_other_settings(world, complete):
    samples = load_samples("entitygrid", world["data"])
    other = EvalSettings(task="entitygrid", gen=dict(GEN, steps=8), warmup=0)
    with pytest.raises(ConfigError, match="gen"):
        evaluate(world["model"], samples, _modes(), complete[0], other, overlays=0, progress=False)
    changed = build_modes(["shirg"], VisualOptions(resolution=336, merge=False))
    with pytest.raises(ConfigError, match="other options"):
        evaluate(world["model"], samples, changed, complete[0], _settings(), overlays=0, progress=False)


def test_ablation_modes_change_one_switch_each():
    base = VisualOptions()
    specs = {s.name: s for s in build_modes(["shirg", *ABLATIONS], base)}
    assert all(s.mode == "shirg" for s in specs.values())
    assert specs["shirg-no-merge"].options.merge is False and specs["shirg-no-merge"].options.coverage is True
    assert specs["shirg-no-coverage"].options.coverage is False
    assert specs["shirg-no-coords"].options.coords is False
    assert specs["shirg-no-sim"].options.weights == (0.0, -0.2, -0.1)
    assert specs["shirg-no-nbr"].options.weights == (0.7, 0.0, -0.1)
    assert specs["shirg-no-ctr"].options.weights == (0.7, -0.2, 0.0)
    assert specs["shirg-nbr-flip"].options.weights == (0.7, 0.2, -0.1)
    assert specs["shirg"].options == base
    with pytest.raises(ConfigError, match="unknown mode 'shirgg'.*shirg-no-merge"):
        build_modes(["shirgg"], base)


def test_cli_ablation_preset_and_errors(world, tmp_path, capsys):
    out = tmp_path / "abl"
    rc = main(["eval", "--model", str(world["ckpt"]), "--task", "entitygrid", "--data", str(world["data"]),
               "--modes", "lowres", "--ablation", "--limit", "1", "--out", str(out), "--gen-length", "8",
               "--steps", "4", "--warmup", "0", "--overlays", "0", "--resolution", "336", "--no-progress"])
    assert rc == 0
    rows = json.loads((out / "summary.json").read_text())["rows"]
    assert [r["mode"] for r in rows] == ["lowres", "shirg", *ABLATIONS]
    assert all(r["n"] == 1 for r in rows)
    assert "shirg-nbr-flip" in capsys.readouterr().out
    base = ["eval", "--model", str(world["ckpt"]), "--out", str(tmp_path / "x")]
    assert main([*base, "--task", "mmmu", "--data", str(world["data"])]) == 2
    assert main([*base, "--task", "entitygrid", "--data", str(world["data"]), "--modes", "lowres,nope"]) == 2
    assert main([*base, "--task", "docvqa", "--data", str(world["data"])]) == 2
    err = capsys.readouterr().err
    assert "valid tasks" in err and "unknown mode 'nope'" in err and "val/val_v1.0.json" in err


@pytest.mark.skipif(not os.environ.get("SHIRG_TEST_ACCELERATE") or shutil.which("accelerate") is None,
                    reason="set SHIRG_TEST_ACCELERATE=1 to run a real 2-process accelerate launch (~1 min)")
def test_accelerate_launch_two_processes(world, complete, tmp_path):
    out = tmp_path / "acc"
    # --multi_gpu selects torch's launcher; with no GPU the ranks form a gloo group on the CPU
    cmd = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "shirg.cli", "eval",
           "--model", str(world["ckpt"]), "--task", "entitygrid", "--data", str(world["data"]),
           "--modes", "lowres,shirg", "--out", str(out), "--gen-length", "8", "--steps", "4", "--block-length", "8",
           "--warmup", "0", "--overlays", "0", "--resolution", "336", "--no-progress"]
    subprocess.run(cmd, check=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""},
                   stdout=sys.stderr)
    assert _preds(out) == _preds(complete[0])
    assert {r["rank"] for r in read_jsonl(out / PRED_FILE)} == {0, 1}


def _count_tower_calls(model) -> tuple[list, object]:
    calls = []
    handle = model.model.vision_tower.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    return calls, handle


@pytest.mark.parametrize("mode", ["shirg", "random"])
def test_evidence_reuses_the_answers_selection(world, tmp_path, mode):
    """One vision pass per hi-res answer (plus warm-up): evidence recall reads the answer's selection."""
    samples = load_samples("entitygrid", world["data"], limit=3)
    settings = EvalSettings(task="entitygrid", gen=dict(GEN), warmup=1)
    calls, handle = _count_tower_calls(world["model"])
    try:
        evaluate(world["model"], samples, build_modes([mode], OPTS), tmp_path, settings, overlays=0, progress=False)
    finally:
        handle.remove()
    assert calls == [1] * (len(samples) + 1)  # three answers and one warm-up, not two passes per answer
    recs = read_jsonl(tmp_path / PRED_FILE)
    assert all(r["evidence_recall"] is not None and 0 <= r["evidence_recall"] <= 1 for r in recs)
    assert all(0 <= r["evidence_recall_strict"] <= r["evidence_recall"] for r in recs)


def test_answer_keeps_its_selection_out_of_to_dict(world):
    from shirg.evaluate.evidence import entity_patches, evidence_recall, kept_patches
    from shirg.evaluate.runner import sample_evidence
    from shirg.model.visual import selection_for

    model = world["model"]
    samples = load_samples("entitygrid", world["data"], limit=2)
    spec = build_modes(["shirg"], OPTS)[0]
    images = [s.image() for s in samples]
    answers = model.answer(images, [s.question for s in samples], mode="shirg", options=OPTS, **GEN)
    for s, img, ans in zip(samples, images, answers, strict=True):
        assert set(ans.to_dict()) == {"text", "token_ids", "meta"}
        json.dumps(ans.to_dict())
        assert ans.selection.features.shape[:2] == (1, ans.meta["visual_tokens"])
        # same question, no suffix: same selection
        again, prep = selection_for(model, img, s.question, spec.mode, spec.options)
        assert torch.equal(again.index, ans.selection.index) and tuple(prep.content_box) == ans.content_box
        entity = entity_patches(s.boxes, img.size, prep.content_box, again.grid)
        assert sample_evidence(model, img, s, spec, ans)["evidence_recall"] == evidence_recall(entity,
                                                                                                kept_patches(again))
    lowres = model.answer(images[:1], [samples[0].question], mode="lowres", **GEN)[0]
    assert lowres.selection is None and lowres.content_box is None


def test_overlays_encode_each_sample_once_per_resolution(world, tmp_path):
    from shirg.evaluate.summary import plot_overlays

    samples = load_samples("entitygrid", world["data"], limit=2)
    modes = build_modes(["shirg", "uniform", "full"], OPTS)
    calls, handle = _count_tower_calls(world["model"])
    try:
        assert plot_overlays(world["model"], samples, modes, tmp_path, [], n=2).is_file()
    finally:
        handle.remove()
    assert calls == [1, 1]  # one pass per sample shared by the three modes


def test_a_failed_high_resolution_pass_is_counted_against_its_mode(world, tmp_path, monkeypatch):
    """A comparison never answers in another mode: the sample whose shirg pass fails is an empty, wrong
    answer of shirg, counted in the table and named in the report."""
    import shirg.model.visual as visual

    real, calls = visual.dual_scale, []

    def flaky(feats, *args, **kwargs):
        calls.append(feats.shape[0])
        if len(calls) in (2, 3):  # the second sample's pass, and answer()'s retry of it alone
            raise RuntimeError("CUDA out of memory")
        return real(feats, *args, **kwargs)

    monkeypatch.setattr(visual, "dual_scale", flaky)
    samples = load_samples("entitygrid", world["data"])[:3]
    out = tmp_path / "failing"
    summary = evaluate(world["model"], samples, _modes(), out, _settings(), overlays=0, progress=False)
    monkeypatch.undo()
    recs = {(r["id"], r["mode"]): r for r in read_jsonl(out / PRED_FILE)}
    failed = recs[(samples[1].id, "shirg")]
    assert failed["failed"] is True and failed["prediction"] == "" and "CUDA out of memory" in failed["error"]
    assert failed["fallback"] is False and failed["visual_tokens"] is None and failed["scores"]["accuracy"] == 0
    assert not recs[(samples[0].id, "shirg")].get("failed") and not recs[(samples[1].id, "lowres")].get("failed")
    rows = {r["mode"]: r for r in summary["rows"]}
    assert rows["shirg"]["failures"] == 1 and rows["lowres"]["failures"] == 0 and rows["shirg"]["n"] == 3
    assert rows["shirg"]["visual_tokens"] == 36 + 192  # the cost columns average the answered samples
    assert "failures" in (out / "summary.md").read_text()
    assert main(["report", "--eval", str(out), "--out", str(tmp_path / "REPORT.md")]) == 0
    report = (tmp_path / "REPORT.md").read_text()
    assert "failed high-resolution passes, scored as wrong answers: shirg (1)" in report
