"""`shirg eval --adapter DIR` answers with the adapter's LoRA layers and SHIRG weights, as `shirg answer
--adapter` does, records the adapter in run.json, and still takes a plain SHIRG weights file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import shirg
from shirg.cli import main
from shirg.entitygrid import EntityGridConfig, generate
from shirg.evaluate.data import load_samples
from shirg.evaluate.runner import PRED_FILE, read_jsonl
from shirg.model.options import VisualOptions
from shirg.testing import write_tiny_lavida_checkpoint

GEN = dict(gen_length=8, steps=4, block_length=8, temperature=0.0, schedule="uniform", seed=0, kv_cache="native")
MODES = ("lowres", "shirg")


def write_perturbed_adapter(ckpt: Path, out: Path, seed: int = 0) -> Path:
    """A `shirg train`-style adapter folder (PEFT LoRA on the projector, a vision layer and every LLM
    block, plus SHIRG weights) whose zero-initialized weights are replaced by large random ones, so
    that answers with it differ from the base model's."""
    from shirg.train.adapter import save_adapter
    from shirg.train.config import config_from_dict
    from shirg.train.lora import make_trainable

    cfg = config_from_dict({"lora": {"rank": 4, "alpha": 8, "dropout": 0.0, "projector": [0, 2], "vision_layers": [0],
                                     "llm_layers": "all"}, "trainable": {"components": ["coord"]}})
    tm = make_trainable(shirg.load(ckpt), cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in tm.lavida.named_parameters():
            if "lora_B" in name or "coord_out" in name:  # both start at zero: no effect until moved
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return save_adapter(tm.peft, tm.lavida, out)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_adapter")
    ckpt = write_tiny_lavida_checkpoint(root / "tiny")
    generate(root / "eg", 3, seed=0, cfg=EntityGridConfig(size=336, rows=4, cols=4, label_px=10))
    adapter = write_perturbed_adapter(ckpt, root / "adapter")
    return {"root": root, "ckpt": ckpt, "data": root / "eg", "adapter": adapter}


def _eval(world, out: Path, *extra: str) -> int:
    return main(["eval", "--model", str(world["ckpt"]), "--task", "entitygrid", "--data", str(world["data"]),
                 "--modes", ",".join(MODES), "--out", str(out), "--gen-length", "8", "--steps", "4",
                 "--block-length", "8", "--warmup", "0", "--overlays", "0", "--resolution", "336", "--no-progress",
                 *extra])


def _answers(model, data: Path) -> dict[tuple[str, str], str]:
    opts = VisualOptions(resolution=336)
    return {(s.id, m): model.answer([s.image()], [s.question], mode=m, options=opts, **GEN)[0].text
            for s in load_samples("entitygrid", data) for m in MODES}


def _predictions(out: Path) -> dict[tuple[str, str], str]:
    return {(r["id"], r["mode"]): r["prediction"] for r in read_jsonl(out / PRED_FILE)}


def test_eval_adapter_answers_with_the_lora_layers(world):
    out = world["root"] / "with_adapter"
    assert _eval(world, out, "--adapter", str(world["adapter"])) == 0
    got = _predictions(out)
    adapted = _answers(shirg.load(world["ckpt"], adapter=world["adapter"]), world["data"])
    base = _answers(shirg.load(world["ckpt"]), world["data"])
    assert got == adapted
    assert got != base, "the perturbed adapter should change some answers"
    run = json.loads((out / "run.json").read_text())
    recorded = run["invocations"][0]["adapter"]
    assert recorded["path"] == str(world["adapter"])
    assert recorded["lora"]["r"] == 4 and recorded["shirg_weights"].endswith("shirg_weights.safetensors")

    report = world["root"] / "REPORT.md"
    assert main(["report", "--eval", str(out), "--out", str(report)]) == 0
    text = report.read_text()
    assert f"{world['adapter']}; LoRA r=4; SHIRG weights" in text and "ran without adapter weights" not in text

    assert _eval(world, out) == 2  # resuming the adapter's folder without the adapter is refused

    plain = world["root"] / "base"
    assert _eval(world, plain) == 0
    assert _predictions(plain) == base
    assert json.loads((plain / "run.json").read_text())["invocations"][0]["adapter"] is None


def test_eval_adapter_still_takes_a_shirg_weights_file(world, tmp_path):
    weights = world["adapter"] / "shirg_weights.safetensors"
    out = tmp_path / "weights_only"
    assert _eval(world, out, "--adapter", str(weights)) == 0
    assert _predictions(out) == _answers(shirg.load(world["ckpt"], shirg_weights=weights), world["data"])
    recorded = json.loads((out / "run.json").read_text())["invocations"][0]["adapter"]
    assert recorded == {"path": None, "lora": None, "shirg_weights": str(weights)}


def test_eval_adapter_errors(world, tmp_path, capsys):
    assert _eval(world, tmp_path / "a", "--adapter", str(tmp_path / "missing")) == 2
    (tmp_path / "empty").mkdir()
    assert _eval(world, tmp_path / "b", "--adapter", str(tmp_path / "empty")) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "adapter_config.json" in err
