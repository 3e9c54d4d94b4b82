"""configs/evidence: every training config validates, and each mixture reads a folder the recipe writes
with the generator line the mixture names (training seeds only, never a test or dev seed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from shirg.train.config import load_config

REPO = Path(__file__).resolve().parents[2]
EVIDENCE = REPO / "configs" / "evidence"
TEST_SEEDS = {9001, 9002, 9003}
DEV_SEEDS = {31, 32, 33, 2026}


def recipe_outputs() -> dict[str, int]:
    """{--out folder: --seed} of every `shirg entitygrid` line of the recipe."""
    out = {}
    for line in (EVIDENCE / "recipe.sh").read_text().splitlines():
        if line.startswith("shirg entitygrid"):
            seed = int(re.search(r"--seed (\d+)", line).group(1))
            out[re.search(r"--out (\S+)", line).group(1)] = seed
    return out


@pytest.mark.parametrize("name", ["head_box", "head_distilled", "head_box_dense", "head_box_lora", "host_dense"])
def test_evidence_configs_validate_and_read_what_the_recipe_writes(name):
    cfg = load_config(EVIDENCE / f"{name}.yaml").validate()
    assert f"shirg train --config configs/evidence/{name}.yaml" in (EVIDENCE / "recipe.sh").read_text()
    mixture = REPO / cfg.data.mixture
    outputs = recipe_outputs()
    for src in yaml.safe_load(mixture.read_text())["sources"]:
        folder = (mixture.parent / src["json"]).resolve().parent.relative_to(REPO).as_posix()
        assert folder in outputs, (name, folder)
        assert outputs[folder] not in TEST_SEEDS | DEV_SEEDS  # trained on training seeds only
    if name.startswith("head_"):
        assert cfg.data.relevance.target == name.split("_")[1]
        if name.endswith("_lora"):  # beside stage 2's LoRA and coordinate embedding
            assert cfg.lora.enabled and cfg.trainable.components == ["coord"] and cfg.data.mode == "shirg"
        else:
            assert not cfg.lora.enabled and cfg.trainable.components == []  # the head alone
