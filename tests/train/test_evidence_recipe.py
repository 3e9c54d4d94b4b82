"""configs/evidence: every training config validates, and each mixture reads a folder the recipe writes
with the generator line the mixture names (training seeds only, never a test or dev seed)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from shirg.train.config import load_config

REPO = Path(__file__).resolve().parents[2]
EVIDENCE = REPO / "configs" / "evidence"
SMALL_RECIPE = REPO / "configs" / "small" / "recipe.sh"
TEST_SEEDS = {9001, 9002, 9003, 9004}
DEV_SEEDS = {31, 32, 33, 35, 36, 38, 39, 57, 59, 61, 66, 67, 2026}


def recipe_outputs() -> dict[str, int]:
    """{--out folder: --seed} of every `shirg entitygrid` line of the two recipes (the evidence recipe also
    reads the bundled model's folders, which configs/small/recipe.sh writes)."""
    out = {}
    lines = (EVIDENCE / "recipe.sh").read_text().splitlines() + (SMALL_RECIPE.read_text().splitlines())
    for line in lines:
        if line.startswith("shirg entitygrid"):
            seed = int(re.search(r"--seed (\d+)", line).group(1))
            out[re.search(r"--out (\S+)", line).group(1)] = seed
    return out


@pytest.mark.parametrize("name", ["head_box", "head_distilled", "head_box_dense", "head_box_lora", "host_dense",
                                  "head_box_densehost", "head_distilled_densehost", "head_tower_densehost",
                                  "host_crowded", "head_tower_crowded", "head_boxtower_crowded",
                                  "host_crowded_everyk", "head_support_crowded", "host_rowcol",
                                  "host_colour", "host_colour_aux", "host_dense_colour",
                                  "host_dense_colour_anneal", "host_colour_mixed",
                                  "host_dense_colour_anneal2"])
def test_evidence_configs_validate_and_read_what_the_recipe_writes(name):
    cfg = load_config(EVIDENCE / f"{name}.yaml").validate()
    assert f"shirg train --config configs/evidence/{name}.yaml" in (EVIDENCE / "recipe.sh").read_text()
    mixture = REPO / cfg.data.mixture
    outputs = recipe_outputs()
    # host_rowcol's other runs swap in the 3 x 3-only, no-reading, lone-entity and curriculum mixtures (steps 10-10l)
    swapped = ["mixture_rowcol3x3.yaml", "mixture_rowcol_only.yaml", "mixture_rowcol_lone.yaml",
               "mixture_rowcol_curriculum.yaml", "mixture_rowcol_alltypes.yaml", "mixture_rowcol_recog.yaml",
               "mixture_rowcol_lonerec.yaml", "mixture_rowcol_recog_bind.yaml",
               "mixture_rowcol_recog_only.yaml"]
    swapped = swapped if name == "host_rowcol" else []
    mixtures = [mixture] + [EVIDENCE / m for m in swapped]
    for m in swapped:
        assert f"data.mixture=configs/evidence/{m}" in (EVIDENCE / "recipe.sh").read_text()
    for mix in mixtures:
        for src in yaml.safe_load(mix.read_text())["sources"]:
            folder = (mix.parent / src["json"]).resolve().parent.relative_to(REPO).as_posix()
            assert folder in outputs, (name, folder)
            assert outputs[folder] not in TEST_SEEDS | DEV_SEEDS  # trained on training seeds only
    if name.endswith("_densehost"):  # trained on the dense host the recipe exports, not the bundled model
        assert cfg.model.path == "runs/dense/host/model"
        assert f"--out {cfg.model.path}" in (EVIDENCE / "recipe.sh").read_text().replace("$H", cfg.model.path)
    if "_crowded" in name:  # the crowded host's chain: tower -> host -> head, each on the one before
        before = {"host_crowded": "runs/crowded/tower/model", "head_tower_crowded": "runs/crowded/host/model",
                  "head_boxtower_crowded": "runs/crowded/host/model", "host_crowded_everyk": "runs/crowded/host/model",
                  "head_support_crowded": "runs/crowded/host/model"}
        assert cfg.model.path == before[name]
    if name == "host_crowded_everyk":  # the tower stays the crowded host's, so heads that read it load unchanged
        assert cfg.trainable.components == ["projector", "llm"] and not cfg.lora.enabled
        assert cfg.data.budgets == list(range(8, 241)) and cfg.modes() == ["full", "random"]
    if name.startswith("head_tower"):  # the distilled target, a head on the tower's features, score head
        assert (cfg.data.relevance.target, cfg.data.relevance.reads, cfg.data.visual.score) == ("distilled", "tower",
                                                                                                "head")
    elif name.startswith("head_boxtower"):  # its box-supervised upper bound: only the target differs
        assert (cfg.data.relevance.target, cfg.data.relevance.reads, cfg.data.visual.score) == ("box", "tower", "head")
        twin = load_config(EVIDENCE / f"{name.replace('boxtower', 'tower')}.yaml").validate()
        assert replace(twin.data.relevance, target="box") == cfg.data.relevance
        assert (twin.run.max_steps, twin.optim, twin.data.mixture) == (cfg.run.max_steps, cfg.optim, cfg.data.mixture)
    elif name == "head_support_crowded":  # step 7's label-free head with step 9's dev choices, nothing else
        twin = load_config(EVIDENCE / "head_tower_crowded.yaml").validate()
        assert replace(twin.data.relevance, pool="mean", attribution="support") == cfg.data.relevance
        assert (cfg.optim.lr_other, cfg.run.max_steps) == (0.03, 240)
        assert replace(twin.optim, lr_other=0.03) == cfg.optim and twin.data.mixture == cfg.data.mixture
    elif name == "host_colour_aux":  # the ablation: host_colour plus the colour head, nothing else
        twin = load_config(EVIDENCE / "host_colour.yaml").validate()
        assert (cfg.data.patch_aux.weight, cfg.data.patch_aux.heads) == (0.1, ["colour"])
        assert replace(twin.data, patch_aux=cfg.data.patch_aux) == cfg.data
        assert replace(twin.run, output_dir=cfg.run.output_dir) == cfg.run
        assert (twin.model, twin.optim, twin.trainable, twin.lora) == (cfg.model, cfg.optim, cfg.trainable, cfg.lora)
    elif name == "host_dense_colour":  # the colour host's LM on a dense tower, trained as the colour host was
        recipe = (EVIDENCE / "recipe.sh").read_text()
        tower = ("shirg train --config configs/evidence/tower_dense.yaml --model runs/colour/host-2000 "
                 "--output-dir runs/dense-colour/tower")
        assert tower in recipe and cfg.model.path == "runs/dense-colour/tower/model"
        # step 11's loop exports every checkpoint it probes, its last (2000) among them, before the tower run
        assert "host:2000" in recipe and "P=runs/colour/$R-$S" in recipe
        assert recipe.index("host:2000") < recipe.index(tower) < recipe.index(f"{name}.yaml")
        twin = load_config(EVIDENCE / "host_colour.yaml").validate()
        assert (twin.optim, twin.trainable, twin.lora) == (cfg.optim, cfg.trainable, cfg.lora)
        assert replace(twin.data, mixture=cfg.data.mixture) == cfg.data
    elif name == "host_dense_colour_anneal":  # step 12's dev-chosen model, same data and parts, a decaying lr
        recipe = (EVIDENCE / "recipe.sh").read_text()
        assert cfg.model.path == "runs/dense-colour/host-300" and "P=runs/dense-colour/host-$S" in recipe
        assert recipe.index("host_dense_colour.yaml") < recipe.index(f"{name}.yaml")
        twin = load_config(EVIDENCE / "host_dense_colour.yaml").validate()
        assert (twin.data, twin.trainable, twin.lora, twin.run.batch_size) == (
            cfg.data, cfg.trainable, cfg.lora, cfg.run.batch_size)
        assert (cfg.optim.schedule, cfg.optim.lr_other, cfg.run.max_steps) == ("cosine", 3e-4, 600)
        assert replace(twin.optim, schedule="cosine", lr_lora=3e-4, lr_other=3e-4) == cfg.optim
    elif name == "host_dense_colour_anneal2":  # step 13's dev-chosen model, same parts and batch, fresh dense scenes
        recipe = (EVIDENCE / "recipe.sh").read_text()
        assert cfg.model.path == "runs/dense-colour/anneal-500" and "P=runs/dense-colour/anneal-$S" in recipe
        assert recipe.index("host_dense_colour_anneal.yaml") < recipe.index(f"{name}.yaml")
        twin = load_config(EVIDENCE / "host_dense_colour_anneal.yaml").validate()
        assert (twin.trainable, twin.lora, twin.run.batch_size) == (cfg.trainable, cfg.lora, cfg.run.batch_size)
        assert replace(twin.data, mixture=cfg.data.mixture) == cfg.data
        assert (cfg.optim.schedule, cfg.optim.lr_other, cfg.run.max_steps) == ("cosine", 2e-4, 500)
        fresh = {s["json"] for s in yaml.safe_load(mixture.read_text())["sources"]}
        assert "../../runs/dense/data/train-62/llava_train.json" in fresh
    elif name == "host_colour_mixed":  # the colour host given every question type, exactly as stage 1c was
        recipe = (EVIDENCE / "recipe.sh").read_text()
        assert cfg.model.path == "runs/colour/host-1500" and "host:1500" in recipe
        twin = load_config(REPO / "configs" / "small" / "stage1c.yaml").validate()
        assert (twin.optim, twin.trainable, twin.lora) == (cfg.optim, cfg.trainable, cfg.lora)
        assert replace(twin.data, mixture=cfg.data.mixture) == cfg.data
        assert replace(twin.run, output_dir=cfg.run.output_dir) == cfg.run
        ours = {s["json"] for s in yaml.safe_load(mixture.read_text())["sources"]}
        assert "../../runs/small/data/mixed/llava_train.json" in ours  # stage 1c's every-type set, all of it
        assert "../../runs/colour/data/read3x3-look-54/llava_train.json" in ours  # the colour host's look-alikes
    elif name.startswith("head_"):
        assert cfg.data.relevance.target == name.split("_")[1] and cfg.data.relevance.reads == "projected"
        if name.endswith("_lora"):  # beside stage 2's LoRA and coordinate embedding
            assert cfg.lora.enabled and cfg.trainable.components == ["coord"] and cfg.data.mode == "shirg"
        else:
            assert not cfg.lora.enabled and cfg.trainable.components == []  # the head alone


@pytest.mark.parametrize("kind", ["dense", "crowded"])
def test_tower_config_reads_training_folders_the_recipe_writes(kind):
    """A host's tower (stage 0's objective, tower only) reads folders of the recipe's training seeds,
    and the host starts from the model it writes."""
    cfg = load_config(EVIDENCE / f"tower_{kind}.yaml").validate()
    recipe = (EVIDENCE / "recipe.sh").read_text()
    assert f"shirg train --config configs/evidence/tower_{kind}.yaml" in recipe
    assert recipe.index(f"configs/evidence/tower_{kind}.yaml") < recipe.index(f"configs/evidence/host_{kind}.yaml")
    assert cfg.data.objective == "patch_labels" and cfg.trainable.components == ["vision"]
    outputs = recipe_outputs()
    for folder in cfg.data.entitygrid:
        assert folder in outputs, folder
        assert outputs[folder] not in TEST_SEEDS | DEV_SEEDS
    host = load_config(EVIDENCE / f"host_{kind}.yaml").validate()
    assert Path(host.model.path) == Path(cfg.run.output_dir) / "model"
