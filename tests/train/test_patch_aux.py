"""data.patch_aux: a linear head on the projector's output (what the language model receives) predicts
each patch's EntityGrid labels next to the answer loss; its gradient reaches the projector, its labels
are stage 0's, and neither the LaViDa checkpoint nor an export keeps the head."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import shirg
from shirg.entitygrid import EntityGridConfig, generate
from shirg.errors import ConfigError
from shirg.testing import tiny_lavida_config, write_tiny_lavida_checkpoint
from shirg.train.config import load_config
from shirg.train.data import collate
from shirg.train.patch_labels import (
    COLOUR_CLASSES,
    HEADS,
    SHAPE_CLASSES,
    PatchTargets,
    cell_targets,
    entity_geometry,
    head_layout,
    load_scenes,
    make_head,
    patch_owners,
    patch_targets,
    scenes_of,
)
from shirg.train.trainer import Trainer, checkpoint_dirs

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("aux")
    ckpt = write_tiny_lavida_checkpoint(root / "ckpt", config=tiny_lavida_config(vision_config={"image_size": 56}))
    data = root / "grid"
    generate(data, 8, seed=5, cfg=EntityGridConfig(size=112, rows=2, cols=2, occupancy=1.0, entity_scale=0.6,
                                                    label_px=8, max_label=9, label_place="inside"),
             types=["reading"])
    mix = root / "mix.yaml"
    mix.write_text(f"sources:\n  - {{name: grid, json: {data / 'llava_train.json'}, image_root: {data}}}\n")
    return ckpt, data, mix


def aux_config(ckpt: Path, mix: Path, out: Path, *more: str):
    return load_config(None, [
        f"model.path={ckpt}", f"data.mixture={mix}", f"run.output_dir={out}", "data.mode=full",
        "data.resolutions=[112]", "data.answer_length=4", "data.patch_aux.weight=1.0",
        "data.patch_aux.heads=[colour, shape]", "lora.enabled=false", "trainable.components=[projector, llm]",
        "run.batch_size=4", "run.max_steps=3", "run.checkpoint_every=3", "run.mixed_precision=no",
        "optim.warmup_steps=0", "optim.lr_other=0.01", *more])


def test_targets_are_stage_zeros_rows_for_the_named_heads(setup):
    _, data, _ = setup
    scenes, _ = load_scenes([data])
    images = [str(s.image) for s in scenes][::-1]
    found = scenes_of(images)
    assert [str(s.image) for s in found] == images  # each image finds its own scene
    targets = PatchTargets(found, ["number", "colour"], 14, "centre")
    full = patch_targets(found[2], 8, "centre")
    assert torch.equal(targets(2, 112), torch.from_numpy(full[[HEADS.index("number"), HEADS.index("colour")]]))
    assert targets(2, 112).shape == (2, 64)


def test_images_outside_entitygrid_folders_are_refused(setup, tmp_path):
    _, data, _ = setup
    stray = tmp_path / "images" / "x.png"
    stray.parent.mkdir(parents=True)
    stray.write_bytes((data / "images" / sorted(p.name for p in (data / "images").iterdir())[0]).read_bytes())
    with pytest.raises(ConfigError, match="not in a `shirg entitygrid` folder"):
        scenes_of([stray])
    (tmp_path / "entitygrid.json").write_text((data / "entitygrid.json").read_text())
    other = (data / "questions.jsonl").read_text().splitlines()[0]  # a record of another image only
    (tmp_path / "questions.jsonl").write_text(other.replace(json.loads(other)["image"], "images/y.png") + "\n")
    with pytest.raises(ConfigError, match="has no scene"):
        scenes_of([stray])


def test_training_adds_the_weighted_aux_loss_and_keeps_the_head_out_of_the_model(setup, tmp_path):
    ckpt, _, mix = setup
    out = tmp_path / "run"
    t = Trainer(aux_config(ckpt, mix, out))
    t.setup()
    assert {"patch_head.weight", "patch_head.bias"} <= set(t.trainable_names)
    assert any(n.startswith("model.mm_projector.") for n in t.trainable_names)
    result = t.run()
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for r in rows:  # the logged loss is the answer loss plus weight x the aux loss
        assert np.isfinite(r["patch_aux"]) and r["patch_aux"] > 0
        assert r["loss"] == pytest.approx(r["answer"] + 1.0 * r["patch_aux"], rel=1e-5)
        assert 0 <= r["acc_colour"] <= 1 and 0 <= r["acc_shape"] <= 1 and "acc_number" not in r
    assert {"patch_head.weight", "patch_head.bias"} <= set(
        load_file(str(checkpoint_dirs(out)[-1] / "trainable.safetensors")))  # resume holds the head
    before, after = shirg.load(ckpt).model.state_dict(), shirg.load(result["model"]).model.state_dict()
    assert set(after) == set(before)  # the model written is LaViDa's layout: no head in it
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert any(k.startswith("mm_projector.") for k in changed)
    assert not any(k.startswith("vision_tower.") for k in changed)


def test_the_aux_gradient_reaches_the_projector_and_teaches_the_head(setup, tmp_path):
    """Aux loss alone (the answer loss weighed down to nothing by a huge aux weight): a few steps at a high
    learning rate raise the colour head's accuracy on the entity patches of the training images."""
    ckpt, _, mix = setup
    cfg = aux_config(ckpt, mix, tmp_path / "run", "data.patch_aux.weight=1000", "data.patch_aux.heads=[colour]",
                     "trainable.components=[projector]", "run.max_steps=25", "run.checkpoint_every=25",
                     "optim.lr_other=0.02", "optim.max_grad_norm=null")
    t = Trainer(cfg)
    t.setup()
    named = t.tm.lavida.named_parameters
    projector = {n: p.detach().clone() for n, p in named() if n.startswith("model.mm_projector.")}
    t.run()
    rows = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    first, last = np.mean([r["acc_colour"] for r in rows[:3]]), np.mean([r["acc_colour"] for r in rows[-3:]])
    assert last > first + 0.2, (first, last)
    assert rows[-1]["patch_aux"] < rows[0]["patch_aux"]
    moved = [n for n, p in named() if n in projector and not torch.equal(p, projector[n])]
    assert moved  # the projector, not only the head, followed the aux loss


def test_the_aux_term_has_its_own_gradient_on_the_projector(setup, tmp_path):
    """The same batch with the aux weight at 0 and at 1: the projector's gradients differ (by the aux
    term's), so the labels shape what the language model receives, not only the head."""
    ckpt, _, mix = setup
    t = Trainer(aux_config(ckpt, mix, tmp_path / "run"))
    t.setup()
    batch = collate([t.dataset[(0, i)] for i in range(4)])
    params = [p for n, p in t.tm.lavida.named_parameters() if n.startswith("model.mm_projector.")]
    grads = []
    for weight in (0.0, 1.0):
        t.module.weight = weight
        out = t.module(batch)
        grads.append(torch.autograd.grad(out["loss"], params))
        assert out["loss"].item() == pytest.approx(out["answer"].item() + weight * out["patch_aux"].item(), rel=1e-6)
    diff = sum((a - b).abs().sum().item() for a, b in zip(*grads, strict=True))
    assert diff > 1e-6 * sum(g.abs().sum().item() for g in grads[0])


def test_a_batch_carries_the_labels_of_its_own_images(setup, tmp_path):
    ckpt, _, mix = setup
    t = Trainer(aux_config(ckpt, mix, tmp_path / "run"))
    t.setup()
    dataset = t.dataset
    items = [dataset[(0, i)] for i in range(3)]
    batch = collate(items)
    assert batch.patch_targets.shape == (3, 2, 64)
    for i in range(3):
        scene = scenes_of([dataset.samples[i].image])[0]
        assert torch.equal(batch.patch_targets[i], torch.from_numpy(patch_targets(scene, 8)[[0, 1]]))


@pytest.mark.parametrize(("override", "message"), [
    ("data.patch_aux.weight=-1", "data.patch_aux.weight must be a number >= 0"),
    ("data.patch_aux.weight=nan", "data.patch_aux.weight must be a number >= 0"),
    ("data.patch_aux.heads=[]", "data.patch_aux.heads must be a non-empty list"),
    ("data.patch_aux.heads=[colour, colour]", "data.patch_aux.heads must be a non-empty list"),
    ("data.patch_aux.heads=[size]", "data.patch_aux.heads must be a non-empty list"),
    ("data.mode=shirg", "it needs data.mode full"),
    ("data.resolutions=[112, 168]", "it needs data.mode full"),
    ("data.relevance.target=box", "data.patch_aux trains next to the answer loss alone"),
])
def test_config_errors_are_one_line(setup, tmp_path, override, message):
    ckpt, _, mix = setup
    with pytest.raises(ConfigError, match=message) as err:
        aux_config(ckpt, mix, tmp_path / "run", override).validate()
    assert "\n" not in str(err.value)


def test_weight_zero_is_off_and_checks_nothing_else(setup, tmp_path):
    ckpt, _, mix = setup
    cfg = aux_config(ckpt, mix, tmp_path / "run", "data.patch_aux.weight=0", "data.patch_aux.heads=[]",
                     "data.mode=shirg").validate()
    assert cfg.data.patch_aux.weight == 0


def test_row_and_column_targets_are_the_covering_entitys_grid_cell(setup):
    """Every patch stage 0 gives a colour gets the grid row and column (from 1) of the entity that colour is
    from; the patch under each entity's centre holds that entity's cell; the rest is 0."""
    _, data, _ = setup
    scenes, _ = load_scenes([data])
    for s in scenes[:4]:
        cells = cell_targets(s, patch_owners(s, 8)[0]).reshape(2, 8, 8)
        stage0 = patch_targets(s, 8).reshape(3, 8, 8)
        assert np.array_equal(cells[0] > 0, stage0[0] > 0) and np.array_equal(cells[1] > 0, stage0[0] > 0)
        assert set(np.unique(cells[0])) <= {0, 1, 2} and set(np.unique(cells[1])) <= {0, 1, 2}
        for e in s.scene:
            cx, cy, _, _ = entity_geometry(s, e)
            i, j = int(cy * 8 / s.size), int(cx * 8 / s.size)
            assert (cells[0, i, j], cells[1, i, j]) == (e["row"], e["col"])
            assert stage0[0, i, j] == COLOUR_CLASSES.index(e["colour"])  # the same entity owns the patch


def test_row_and_column_heads_follow_the_stage_zero_heads(setup):
    _, data, _ = setup
    scenes, _ = load_scenes([data])
    targets = PatchTargets(scenes, ["column", "colour", "row"], 14, "centre")
    assert targets.cells and targets.max_cells == 2  # 2 x 2 scenes
    assert not PatchTargets(scenes, ["colour"], 14, "centre").max_cells  # no cell head: stage 0's head size
    cells, stage0 = cell_targets(scenes[1], patch_owners(scenes[1], 8)[0]), patch_targets(scenes[1], 8)
    assert torch.equal(targets(1, 112), torch.from_numpy(np.stack([cells[1], stage0[0], cells[0]])))
    layout = head_layout(9, ["row", "column", "number"], max_cells=2)
    n_stage0 = len(COLOUR_CLASSES) + len(SHAPE_CLASSES) + 10
    assert layout == [("row", n_stage0, 3), ("column", n_stage0 + 3, 3), ("number", n_stage0 - 10, 10)]
    assert make_head(16, 9, max_cells=2).out_features == n_stage0 + 6
    assert make_head(16, 9).out_features == n_stage0  # stage 0's head is unchanged
    with pytest.raises(ConfigError, match="max_cells"):
        head_layout(9, ["row"])


def test_training_with_row_and_column_heads_logs_their_accuracy(setup, tmp_path):
    ckpt, _, mix = setup
    t = Trainer(aux_config(ckpt, mix, tmp_path / "run", "data.patch_aux.heads=[row, column]"))
    t.setup()
    assert t.tm.lavida.patch_head.out_features == len(COLOUR_CLASSES) + len(SHAPE_CLASSES) + 10 + 6
    t.run()
    rows = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(0 <= r["acc_row"] <= 1 and 0 <= r["acc_column"] <= 1 for r in rows)
    assert all(r["loss"] == pytest.approx(r["answer"] + r["patch_aux"], rel=1e-5) for r in rows)
