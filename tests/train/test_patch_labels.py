"""Stage 0 (data.objective: patch_labels): per-patch targets against the rendered pixels, and the
trainer path end to end on a tiny checkpoint (tower alone trained, head kept out of the model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import shirg
from shirg.entitygrid import COLOURS, EntityGridConfig, generate
from shirg.errors import ConfigError
from shirg.testing import tiny_lavida_config, write_tiny_lavida_checkpoint
from shirg.train.config import load_config
from shirg.train.patch_labels import (
    COLOUR_CLASSES,
    COVER,
    SHAPE_CLASSES,
    PatchLabelDataset,
    balanced_ce,
    load_scenes,
    patch_targets,
)
from shirg.train.trainer import Trainer, checkpoint_dirs

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _grid_folder(root: Path, place: str, n: int = 6, size: int = 336, seed: int = 3, **more) -> Path:
    cfg = EntityGridConfig(size=size, rows=3, cols=3, occupancy=0.8, entity_scale=0.45, label_px=8, max_label=9,
                           label_place=place, **more)
    generate(root, n, seed=seed, cfg=cfg)
    return root


@pytest.mark.parametrize(("place", "more"), [("inside", {}), ("under", {}),
                                             ("inside", {"label_grid": 14, "label_jitter": 2})])
def test_targets_match_the_rendered_pixels(tmp_path, place, more):
    scenes, max_label = load_scenes([_grid_folder(tmp_path / place, place, **more)])
    assert max_label == 9 and len(scenes) == 6
    grid, p = 24, 14
    for s in scenes:
        t = patch_targets(s, grid)
        img = np.asarray(Image.open(s.image).convert("RGB")).astype(int)
        # every entity's number is on exactly one patch, and that patch holds black (digit) pixels
        numbers = t[2][t[2] > 0]
        assert sorted(numbers.tolist()) == sorted(e["label"] for e in s.scene)
        for k in np.flatnonzero(t[2]):
            i, j = divmod(int(k), grid)
            patch = img[i * p : (i + 1) * p, j * p : (j + 1) * p]
            # the digit is antialiased black: grey pixels (r = g = b) darker than the grid lines
            grey = (np.ptp(patch, axis=-1) < 30) & (patch.sum(-1) < 600)
            assert grey.any(), f"no digit pixels where number {t[2][k]} is placed"
        for k in range(grid * grid):
            i, j = divmod(k, grid)
            patch = img[i * p : (i + 1) * p, j * p : (j + 1) * p].reshape(-1, 3)
            share = {c: (patch == COLOURS[c]).all(-1).mean() for c in COLOURS}
            if t[0, k]:  # a labelled patch shows its entity's colour
                assert share[COLOUR_CLASSES[t[0, k]]] > 0
            else:  # an empty one shows less than COVER of any colour (the tag only hides colour; the
                # centre recovered from the integer box is within half a pixel: 7 of 196 pixels)
                assert t[1, k] == 0 and max(share.values()) <= COVER + 7 / 196 + 1e-9
        # inside: each number sits on a patch of its own entity; under: on a background patch below it
        for e in s.scene:
            k = int(np.flatnonzero(t[2] == e["label"])[0])
            i, j = divmod(k, grid)
            if place == "inside":
                assert COLOUR_CLASSES[t[0, k]] == e["colour"] and SHAPE_CLASSES[t[1, k]] == e["shape"]
            else:
                assert i * p >= e["box"][1] + (e["box"][3] - e["box"][1]) / 2


def test_numbers_spread_over_their_entity(tmp_path):
    scenes, _ = load_scenes([_grid_folder(tmp_path / "g", "inside", n=3, label_grid=14, label_jitter=2)])
    for s in scenes:
        centre, spread = patch_targets(s, 24), patch_targets(s, 24, number_on="entity")
        assert np.array_equal(centre[:2], spread[:2])  # colour and shape unchanged
        on = spread[0] > 0
        assert (spread[2][on] > 0).all() and (spread[2][~on] == 0).all()  # every entity patch, nothing else
        for e in s.scene:  # each entity's patches carry its own number, its centre patch among them
            patches = np.flatnonzero(spread[2] == e["label"])
            assert np.flatnonzero(centre[2] == e["label"])[0] in patches
            assert {COLOUR_CLASSES[c] for c in spread[0][patches]} == {e["colour"]}
        assert (spread[2] > 0).sum() > 4 * (centre[2] > 0).sum()
    with pytest.raises(ConfigError, match="number_on"):
        patch_targets(scenes[0], 24, number_on="everywhere")
    with pytest.raises(ConfigError, match="patch_number"):
        load_config(None, ["data.objective=patch_labels", "lora.enabled=false", "trainable.components=[vision]",
                           "data.resolutions=[112]", "data.entitygrid=[a]", "data.patch_number=all"])


def test_a_coarser_grid_keeps_every_number_and_class_counts_shrink(tmp_path):
    scenes, _ = load_scenes([_grid_folder(tmp_path / "g", "inside", n=2)])
    fine, coarse = patch_targets(scenes[0], 24), patch_targets(scenes[0], 12)
    assert sorted(fine[2][fine[2] > 0]) == sorted(coarse[2][coarse[2] > 0])
    assert (coarse[0] > 0).sum() < (fine[0] > 0).sum()


def test_balanced_ce_weighs_foreground_and_background_equally():
    logits = torch.zeros(4, 3)
    logits[:, 0] = 5.0  # confident "none" everywhere
    target = torch.tensor([0, 0, 0, 2])
    plain = torch.nn.functional.cross_entropy(logits, target)
    assert balanced_ce(logits, target) > plain  # the one missed foreground patch counts for half
    assert balanced_ce(logits, torch.zeros(4, dtype=torch.long)) == pytest.approx(
        torch.nn.functional.cross_entropy(logits, torch.zeros(4, dtype=torch.long)).item())


def test_bad_folders_and_configs_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="data.entitygrid"):
        load_scenes([])
    with pytest.raises(ConfigError, match="not a `shirg entitygrid` folder"):
        load_scenes([tmp_path])
    base = ["data.objective=patch_labels", "lora.enabled=false", "trainable.components=[vision]",
            "data.resolutions=[112]"]
    with pytest.raises(ConfigError, match="vision tower alone"):
        load_config(None, [*base[:1], "data.resolutions=[112]"])
    with pytest.raises(ConfigError, match="one high-detail resolution"):
        load_config(None, [*base[:3], "data.entitygrid=[runs/a]", "data.resolutions=[112, 168]"])
    with pytest.raises(ConfigError, match="data.objective"):
        load_config(None, ["data.objective=captions"])
    assert load_config(None, [*base, "data.entitygrid=[runs/a]"]).data.objective == "patch_labels"
    with pytest.raises(ConfigError, match="non-empty list"):
        load_config(None, base)
    with pytest.raises(ConfigError, match="non-empty list"):
        load_config(None, [*base, "data.entitygrid=runs/a"])  # a string, not a list
    with pytest.raises(ConfigError, match="not data.mixture"):
        load_config(None, [*base, "data.entitygrid=[runs/a]", "data.mixture=mix.yaml"])
    with pytest.raises(ConfigError, match="read only by data.objective patch_labels"):
        load_config(None, ["data.entitygrid=[runs/a]"])
    with pytest.raises(ConfigError, match="multiple of the 14-px patch"):
        PatchLabelDataset([], 100, 56)


@pytest.fixture(scope="module")
def stage0_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage0")
    ckpt = write_tiny_lavida_checkpoint(root / "ckpt", config=tiny_lavida_config(vision_config={"image_size": 56}))
    data = _grid_folder(root / "grid", "inside", n=8, size=112)
    return ckpt, data


def _stage0_config(ckpt: Path, data: Path, out: Path, *more: str):
    return load_config(CONFIGS / "small" / "stage0.yaml", [
        f"model.path={ckpt}", f"data.entitygrid=[{data}]", "data.resolutions=[112]", f"run.output_dir={out}",
        "run.batch_size=4", "run.max_steps=4", "run.checkpoint_every=2", "run.mixed_precision=no",
        "optim.warmup_steps=0", *more])


def _run(cfg, **kw) -> dict:
    t = Trainer(cfg, **kw)
    t.setup()
    return t.run()


def test_stage0_trains_the_tower_alone_and_writes_a_lavida_checkpoint(stage0_setup, tmp_path):
    ckpt, data = stage0_setup
    out = tmp_path / "run"
    result = _run(_stage0_config(ckpt, data, out))
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and rows[-1]["loss"] < rows[0]["loss"]
    for key in ("ce_number_full", "acc_number_lowres", "ce_colour_lowres", "acc_shape_full"):
        assert all(np.isfinite(r[key]) for r in rows), key
    # the checkpoint holds the head (for --resume); the model folder does not, and loads as LaViDa
    ckpt_weights = load_file(str(checkpoint_dirs(out)[-1] / "trainable.safetensors"))
    assert {"patch_head.weight", "patch_head.bias"} <= set(ckpt_weights)
    model_dir = Path(result["model"])
    before, after = shirg.load(ckpt), shirg.load(model_dir)
    b, a = before.model.state_dict(), after.model.state_dict()
    assert set(a) == set(b)
    changed = {k for k in a if not torch.equal(a[k], b[k])}
    assert changed and all(k.startswith("vision_tower.") for k in changed)
    assert (out / "loss.png").is_file()
    # an intermediate checkpoint exports to the same LaViDa checkpoint (the head is dropped there too)
    from shirg.cli import main

    exported = tmp_path / "exported"
    assert main(["export", "--model", str(ckpt), "--checkpoint", str(checkpoint_dirs(out)[-1]),
                 "--out", str(exported)]) == 0
    e = shirg.load(exported).model.state_dict()
    assert all(torch.equal(e[k], a[k]) for k in a)


def test_every_trained_tower_weight_gets_a_gradient(stage0_setup):
    """DDP (find_unused_parameters off) needs a gradient for every trainable weight: the tower's
    post-LN, which LaViDa never reads, must stay frozen."""
    from shirg.train.lora import make_trainable
    from shirg.train.patch_labels import PatchBatch, PatchLabelModule, make_head

    ckpt, data = stage0_setup
    cfg = _stage0_config(ckpt, data, Path("unused"))
    model = shirg.load(ckpt)
    tm = make_trainable(model, cfg)
    model.patch_head = make_head(model.config.vision.hidden_size, 9)
    scenes, _ = load_scenes([data])
    ds = PatchLabelDataset(scenes, 112, 56)
    items = [ds[(0, i)] for i in range(2)]
    batch = PatchBatch(views={v: (torch.stack([x[v][0] for x in items]), torch.stack([x[v][1] for x in items]))
                              for v in ("full", "lowres")})
    PatchLabelModule(model, model.patch_head, 9)(batch)["loss"].backward()
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trained and not [n for n, p in trained if p.grad is None]
    assert not any("post_layernorm" in n for n, _ in tm.named_trainable())


def test_stage0_resume_gives_the_uninterrupted_losses(stage0_setup, tmp_path):
    ckpt, data = stage0_setup
    straight, broken = tmp_path / "a", tmp_path / "b"
    _run(_stage0_config(ckpt, data, straight))
    _run(_stage0_config(ckpt, data, broken), stop_after=2)
    _run(_stage0_config(ckpt, data, broken), resume=True)

    def losses(d):
        return [json.loads(ln)["loss"] for ln in (d / "metrics.jsonl").read_text().splitlines()]

    np.testing.assert_allclose(losses(broken), losses(straight), rtol=0, atol=1e-6)
