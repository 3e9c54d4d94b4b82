"""Shared fixtures: tiny random checkpoints written in LaViDa's / SigLIP's real layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from shirg.vision.siglip import VisionTower, vision_config

TINY_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)


def tiny_tower(seed: int = 0, layers: int = 2) -> VisionTower:
    torch.manual_seed(seed)
    return VisionTower(vision_config(**{**TINY_VISION, "num_hidden_layers": layers})).eval()


def write_vision_folder(folder: Path, tower: VisionTower, layout: str) -> Path:
    """Write a tower as a LaViDa checkpoint (vision keys only) or as a standalone SigLIP folder."""
    folder.mkdir(parents=True, exist_ok=True)
    sd = {k.removeprefix("vision_tower."): v.contiguous() for k, v in tower.state_dict().items()}
    vc = {k: getattr(tower.config, k) for k in TINY_VISION} | {"image_size": 384, "patch_size": 14}
    if layout == "lavida":
        state = {f"model.vision_tower.vision_tower.{k}": v for k, v in sd.items()}
        config = {"mm_vision_tower": "google/siglip-so400m-patch14-384", "vision_config": vc}
    else:
        state = dict(sd)
        # a real SigLIP folder holds one more layer (LaViDa drops it), a text tower and logit scales
        extra = tiny_tower(seed=99, layers=tower.config.num_hidden_layers + 1).state_dict()
        n = tower.config.num_hidden_layers
        for k, v in extra.items():
            if f"encoder.layers.{n}." in k:
                state[k.removeprefix("vision_tower.")] = v.contiguous()
        state["text_model.embeddings.token_embedding.weight"] = torch.zeros(10, 4)
        state["logit_scale"] = torch.zeros(1)
        config = {"model_type": "siglip", "vision_config": vc}
    save_file(state, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture
def vision_folder(tmp_path: Path) -> Path:
    return write_vision_folder(tmp_path / "lavida", tiny_tower(), "lavida")


@pytest.fixture
def chart_image(tmp_path: Path) -> Path:
    """A small synthetic 'document': dark text-like bars on white, wider than tall."""
    rng = np.random.default_rng(0)
    arr = np.full((300, 500, 3), 255, dtype=np.uint8)
    for row in range(20, 280, 24):
        for col in range(20, 480, 60):
            w = int(rng.integers(10, 50))
            arr[row : row + 8, col : col + w] = rng.integers(0, 80)
    path = tmp_path / "chart.png"
    Image.fromarray(arr).save(path)
    return path


# A dense EntityGrid reading set (4 x 4 cells, look-alike distractors), as the sweep and relevance tests use
DENSE_READING = ["--preset", "small", "--grid", "4x4", "--occupancy", "1.0", "--entity-scale", "0.4",
                 "--repeat-labels", "--lookalikes", "3", "--label-place", "inside", "--types", "reading"]


def write_dense_reading_set(out: Path, n: int, seed: int) -> Path:
    from shirg.cli import main

    assert main(["entitygrid", *DENSE_READING, "--n", str(n), "--seed", str(seed), "--out", str(out)]) == 0
    return out
