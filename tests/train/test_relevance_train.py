"""`shirg train` with data.relevance: the head trains next to the answer loss, lands in the adapter
folder, and SHIRG's selection reads it when that adapter is loaded (and only through the head)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import shirg
from shirg.errors import CheckpointError, ConfigError
from shirg.model.options import VisualOptions
from shirg.model.visual import encode_for, question_context, selection_for
from shirg.testing import write_tiny_lavida_checkpoint
from shirg.tokens.scoring import shirg_scores
from shirg.train.config import load_config
from shirg.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "train_tiny_cpu.yaml"
QUESTION = "what color is the square?"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return write_tiny_lavida_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


def toy_images(folder: Path, n: int = 4) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        arr = rng.integers(0, 60, size=(96, 112, 3), dtype=np.uint8)
        arr[10 + 8 * i : 40 + 8 * i, 20:50] = (220, 30, 30) if i % 2 else (30, 30, 220)
        Image.fromarray(arr).save(folder / f"{i}.png")
        paths.append(folder / f"{i}.png")
    return paths


def toy_mixture(folder: Path, boxes: bool = False) -> Path:
    """Four toy records; ``boxes``: each carries its square's box ([x0, y0, x1, y1] pixels)."""
    paths = toy_images(folder / "img")
    records = [{"id": str(i), "image": p.name, "conversations": [
        {"from": "human", "value": f"<image>\n{QUESTION}"}, {"from": "gpt", "value": "red" if i % 2 else "blue"}]}
        for i, p in enumerate(paths)]
    if boxes:
        for i, r in enumerate(records):
            r["boxes"] = [[20, 10 + 8 * i, 50, 40 + 8 * i]]
    (folder / "train.json").write_text(json.dumps(records))
    mix = folder / "mix.yaml"
    mix.write_text("sources:\n  - {name: toy, json: train.json, image_root: img}\n")
    return mix


def relevance_config(ckpt: Path, mix: Path, out: Path, *overrides: str):
    return load_config(TINY, [f"model.path={ckpt}", f"data.mixture={mix}", f"run.output_dir={out}",
                              "lora.enabled=false", "trainable.components=[]", "data.resolutions=[112]",
                              "data.relevance.target=distilled", "data.relevance.weight=1.0",
                              "data.relevance.rank=4", "run.max_steps=2", "run.checkpoint_every=2",
                              "optim.lr_other=0.05", *overrides])


def test_training_writes_the_head_and_selection_reads_it_only_through_the_head(ckpt, tmp_path):
    mix = toy_mixture(tmp_path / "data")
    trainer = Trainer(relevance_config(ckpt, mix, tmp_path / "run"))
    trainer.setup()
    assert sorted(trainer.trainable_names) == ["relevance_head.scale", "relevance_head.text.weight",
                                               "relevance_head.token.weight"]  # only the head is trained
    result = trainer.run()
    assert result["steps"] == 2 and all(np.isfinite(result["losses"]))
    records = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if ln]
    assert all(np.isfinite(r["relevance"]) and r["relevance"] >= 0 for r in records)
    adapter = tmp_path / "run" / "adapter"
    assert sorted(f.name for f in adapter.iterdir()) == ["relevance_head.safetensors"]  # nothing else trained
    state = load_file(str(adapter / "relevance_head.safetensors"))
    assert state["token.weight"].shape[0] == 4 and float(state["scale"]) != 0.0  # the head moved off zero

    base = shirg.load(ckpt)
    loaded = shirg.load(ckpt, adapter=adapter)
    assert base.relevance_head is None and loaded.relevance_head is not None
    assert torch.equal(loaded.relevance_head.scale.detach(), state["scale"])
    image = Image.open(toy_images(tmp_path / "probe", 1)[0]).convert("RGB")
    opts = VisualOptions(resolution=112, k=20)
    tokens, _ = encode_for(base, image, opts)
    text_base, text_loaded = question_context(base, [QUESTION]), question_context(loaded, [QUESTION])
    assert text_base.head is None and text_loaded.head is loaded.relevance_head
    # the score differs from today's exactly by the head's term, added to Sim
    from shirg.tokens.relevance_head import learned_scores

    plain = shirg_scores(tokens, text_base)
    with torch.no_grad():
        learned = learned_scores(tokens, text_loaded, loaded.relevance_head)
        delta = loaded.relevance_head(text_loaded.project(tokens.hi), text_loaded.question, text_loaded.mask())
    assert not torch.equal(learned.sim, plain.sim)
    torch.testing.assert_close(learned.sim, plain.sim + delta, rtol=0, atol=0)
    assert torch.equal(learned.nbr, plain.nbr) and torch.equal(learned.ctr, plain.ctr)
    # selection: a zero head gives exactly today's selection; a dominant head changes it
    with torch.no_grad():
        loaded.relevance_head.scale.zero_()
    same, _ = selection_for(loaded, image, QUESTION, "shirg", opts)
    today, _ = selection_for(base, image, QUESTION, "shirg", opts)
    assert torch.equal(same.index, today.index) and torch.equal(same.features, today.features)
    with torch.no_grad():
        loaded.relevance_head.scale.fill_(1e4)
    moved, _ = selection_for(loaded, image, QUESTION, "shirg", opts)
    assert not torch.equal(moved.index, today.index)


@pytest.mark.parametrize(("override", "message"), [
    ("data.relevance.target=oracle", "data.relevance.target 'oracle'"),
    ("data.relevance.weight=-1", "data.relevance.weight must be > 0"),
    ("data.relevance.rank=0", "data.relevance.rank must be an integer >= 1"),
    ("data.relevance.tau=0", "data.relevance.tau must be > 0"),
    ("data.objective=patch_labels", "data.relevance trains next to the answer loss"),
])
def test_relevance_config_errors_are_one_line(ckpt, tmp_path, override, message):
    with pytest.raises(ConfigError, match=message) as err:
        relevance_config(ckpt, tmp_path / "mix.yaml", tmp_path / "run", override).validate()
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['nope'\] in data.relevance"):
        relevance_config(ckpt, tmp_path / "mix.yaml", tmp_path / "run", "data.relevance.nope=1")


def test_a_head_for_another_width_is_refused(ckpt, tmp_path):
    from safetensors.torch import save_file

    from shirg.tokens.relevance_head import RelevanceHead

    folder = tmp_path / "adapter"
    folder.mkdir()
    head = RelevanceHead(7, 2)
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(folder / "relevance_head.safetensors"))
    with pytest.raises(CheckpointError, match="relevance head reads 7-dim tokens"):
        shirg.load(ckpt, adapter=folder)


def test_the_head_trains_beside_lora_and_both_load(ckpt, tmp_path):
    mix = toy_mixture(tmp_path / "data")
    trainer = Trainer(relevance_config(ckpt, mix, tmp_path / "run", "lora.enabled=true", "run.max_steps=1"))
    trainer.setup()
    names = trainer.trainable_names
    assert any("lora_" in n for n in names) and "relevance_head.scale" in names
    trainer.run()
    adapter = tmp_path / "run" / "adapter"
    assert {"adapter_config.json", "relevance_head.safetensors"} <= {f.name for f in adapter.iterdir()}
    model = shirg.load(ckpt, adapter=adapter)
    state = load_file(str(adapter / "relevance_head.safetensors"))
    assert torch.equal(model.relevance_head.token.weight.detach(), state["token.weight"])


def test_the_box_target_trains_the_head_from_the_records_boxes(ckpt, tmp_path):
    from shirg.train.data import load_mixture
    from shirg.train.relevance import batch_box_target

    mix = toy_mixture(tmp_path / "data", boxes=True)
    samples = load_mixture(mix)
    assert [s.boxes for s in samples] == [((20.0, 10.0 + 8 * i, 50.0, 40.0 + 8 * i),) for i in range(4)]
    trainer = Trainer(relevance_config(ckpt, mix, tmp_path / "run", "data.relevance.target=box", "run.max_steps=3",
                                       "run.checkpoint_every=3"))
    trainer.setup()
    batch = trainer.collate([trainer.dataset[(0, i)] for i in range(4)])
    assert batch.boxes is not None and all(b is not None for b in batch.boxes)
    # the target, derived here from its definition: 112 px = 8 x 8 patches of 14 px; the 112 x 96 image is
    # padded to a square (8 px of padding above and below), so patch (r, c)'s centre is image pixel
    # (14 c + 7, 14 r + 7 - 8); the target is uniform over the patches whose centre lies inside the box
    target = batch_box_target(batch, 112, 8)
    for row, (box, size) in zip(target, batch.boxes, strict=True):
        assert size == (112, 96)
        (x0, y0, x1, y1), = box
        inside = torch.tensor([float(x0 <= 14 * c + 7 <= x1 and y0 <= 14 * r + 7 - 8 <= y1)
                               for r in range(8) for c in range(8)])
        torch.testing.assert_close(row, inside / inside.sum())
    result = trainer.run()
    records = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if ln]
    assert result["steps"] == 3 and all(np.isfinite(r["relevance"]) and r["relevance"] > 0 for r in records)
    assert (tmp_path / "run" / "adapter" / "relevance_head.safetensors").is_file()
    from shirg.commands.eval import resolve_adapter

    assert resolve_adapter(str(tmp_path / "run" / "adapter")) == (tmp_path / "run" / "adapter", None)  # --adapter
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds none of adapter_config.json"):
        resolve_adapter(str(tmp_path / "empty"))


def test_the_box_target_refuses_records_without_boxes(ckpt, tmp_path):
    mix = toy_mixture(tmp_path / "data", boxes=False)
    trainer = Trainer(relevance_config(ckpt, mix, tmp_path / "run", "data.relevance.target=box"))
    with pytest.raises(ConfigError, match="4 of 4 training samples carry no evidence 'boxes'"):
        trainer.setup()


def test_malformed_record_boxes_are_one_line_errors(tmp_path):
    from shirg.train.data import records_to_samples

    base = {"id": "x", "image": "a.png", "conversations": [{"from": "human", "value": "<image>\nq"},
                                                            {"from": "gpt", "value": "a"}]}
    for bad in ([1, 2, 3, 4], [[1, 2, 3]], [[5, 5, 4, 9]], [["a", 0, 1, 1]], "box"):
        with pytest.raises(ConfigError, match="record x: boxes must be a list of") as err:
            records_to_samples([{**base, "boxes": bad}], tmp_path)
        assert "\n" not in str(err.value)


def test_a_tower_head_trains_for_the_head_source_and_selects_without_the_projector(ckpt, tmp_path, capsys):
    from safetensors import safe_open

    from shirg.cli import main

    mix = toy_mixture(tmp_path / "data")
    cfg = relevance_config(ckpt, mix, tmp_path / "run", "data.relevance.reads=tower", "data.visual.score=head",
                           "data.relevance.pool=mean", "data.relevance.attribution=support")
    trainer = Trainer(cfg)
    trainer.setup()
    assert trainer.module.objective.attribution == "support"
    result = trainer.run()
    assert result["steps"] == 2 and all(np.isfinite(result["losses"]))
    file = tmp_path / "run" / "adapter" / "relevance_head.safetensors"
    with safe_open(str(file), framework="pt") as f:
        assert f.metadata()["reads"] == "tower" and f.metadata()["pool"] == "mean"
        assert f.get_tensor("token.weight").shape == (4, 32) and f.get_tensor("text.weight").shape == (4, 64)
    model = shirg.load(ckpt, adapter=tmp_path / "run" / "adapter")
    assert model.relevance_head.reads == "tower" and model.relevance_head.pool == "mean"
    assert float(model.relevance_head.scale) != 0.0
    image = Image.open(toy_images(tmp_path / "probe", 1)[0]).convert("RGB")
    opts = VisualOptions(resolution=112, k=20, score="head")
    saliency, _ = selection_for(model, image, QUESTION, "shirg", VisualOptions(resolution=112, k=20, score="saliency"))
    calls = []
    hook = model.model.mm_projector.register_forward_hook(lambda *a: calls.append(1))
    try:
        with torch.no_grad():
            model.relevance_head.scale.fill_(1e4)
        picked, _ = selection_for(model, image, QUESTION, "shirg", opts)
    finally:
        hook.remove()
    assert calls == [] and not torch.equal(picked.index, saliency.index)
    # `shirg select` scores with the adapter's head; without a tower head the head source is refused
    out = tmp_path / "o.png"
    base = ["select", "--image", str(toy_images(tmp_path / "probe", 1)[0]), "--model", str(ckpt), "--resolution",
            "112", "--k", "20", "--question", QUESTION, "--score", "head", "--out", str(out)]
    assert main(base + ["--adapter", str(tmp_path / "run" / "adapter"), "--json", str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text())["score_source"] == "head"
    capsys.readouterr()
    out.unlink()
    assert main(base) == 2
    err = capsys.readouterr().err.strip()
    assert "score source 'head' needs a relevance head that reads the tower" in err and "\n" not in err
    assert not out.exists()


@pytest.mark.parametrize(("overrides", "message"), [
    (["data.relevance.reads=pixels"], "data.relevance.reads 'pixels'"),
    (["data.relevance.pool=sum"], "data.relevance.pool 'sum': choose one of max, mean"),
    (["data.relevance.attribution=signed"], "data.relevance.attribution 'signed': choose one of abs, support"),
    (["data.visual.score=head"], "data.visual.score head gives a head that reads projected tokens no term"),
    (["data.relevance.reads=tower", "data.visual.score=saliency"], "data.visual.score saliency gives a head"),
])
def test_a_head_the_score_cannot_read_is_a_config_error(ckpt, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        relevance_config(ckpt, tmp_path / "mix.yaml", tmp_path / "run", *overrides).validate()


def test_a_tower_head_for_another_tower_width_is_refused(ckpt, tmp_path):
    from safetensors.torch import save_file

    from shirg.tokens.relevance_head import RelevanceHead

    folder = tmp_path / "adapter"
    folder.mkdir()
    head = RelevanceHead(64, 2, text_dim=64, reads="tower")  # the LLM's width where the tower's (32) belongs
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(folder / "relevance_head.safetensors"),
              metadata={"format": "pt", "reads": "tower"})
    with pytest.raises(CheckpointError, match=r"reads 64-dim tokens \(the tower's features\) and 64-dim question "
                                               r"embeddings; this model's are 32-dim"):
        shirg.load(ckpt, adapter=folder)
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(folder / "relevance_head.safetensors"),
              metadata={"format": "pt", "reads": "pixels"})
    with pytest.raises(CheckpointError, match="reads 'pixels'"):
        shirg.load(ckpt, adapter=folder)
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(folder / "relevance_head.safetensors"),
              metadata={"format": "pt", "reads": "projected", "pool": "sum"})
    with pytest.raises(CheckpointError, match="pools by 'sum', not one of max, mean"):
        shirg.load(ckpt, adapter=folder)


def test_the_head_source_without_a_tower_head_is_refused_before_any_work(ckpt, tmp_path, capsys):
    from shirg.cli import main
    from shirg.model.options import VisualOptions
    from shirg.serve.engine import Engine

    image = toy_images(tmp_path / "img", 1)[0]
    out = tmp_path / "answer.json"
    args = ["answer", "--model", str(ckpt), "--image", str(image), "--question", QUESTION, "--mode", "shirg",
            "--resolution", "112", "--k", "20", "--score", "head", "--json", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "score source 'head' needs a relevance head that reads the tower" in err and "\n" not in err
    assert not out.exists()
    with pytest.raises(ConfigError, match="no relevance head is loaded"):
        Engine.load(ckpt, None, ["shirg"], options=VisualOptions(resolution=112, k=20, score="head"))
    Engine.load(ckpt, None, ["lowres"], options=VisualOptions(resolution=112, k=20, score="head"))  # no shirg mode
