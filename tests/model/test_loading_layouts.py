"""Loading the vision tower from the layouts transformers and LaViDa write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import SiglipVisionConfig, SiglipVisionModel

import shirg
from shirg.errors import CheckpointError
from shirg.testing import tiny_lavida_config, write_tiny_lavida_checkpoint
from shirg.vision.siglip import load_vision_tower

SMALL = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
             image_size=384, patch_size=14)


def _saved_vision_model(folder: Path, seed: int = 0) -> SiglipVisionModel:
    torch.manual_seed(seed)
    model = SiglipVisionModel(SiglipVisionConfig(**SMALL)).eval()
    model.save_pretrained(str(folder))  # transformers 5.x: keys without "vision_model."
    return model


def test_save_pretrained_folder_loads(tmp_path):
    ref = _saved_vision_model(tmp_path / "sv")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "sv" / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert "embeddings.patch_embedding.weight" in keys and not any(k.startswith("vision_model.") for k in keys)
    tower = load_vision_tower(tmp_path / "sv")
    assert tower.config.num_hidden_layers == SMALL["num_hidden_layers"] - 1  # LaViDa drops the last layer
    assert tower.config.hidden_size == 48
    pixels = torch.randn(2, 3, 384, 384)
    with torch.no_grad():
        want = ref(pixels, output_hidden_states=True).hidden_states[-2]  # residual stream before the last layer
        got = tower(pixels)
    assert torch.allclose(got, want, atol=1e-5)


def test_lavida_checkpoint_reads_tower_config_from_mm_vision_tower(tmp_path, monkeypatch):
    tower_dir = tmp_path / "siglip-small"
    _saved_vision_model(tower_dir)
    vc = {k: v for k, v in SMALL.items()} | {"num_hidden_layers": 2}
    cfg = tiny_lavida_config(mm_hidden_size=48, vision_config=vc)
    ckpt = write_tiny_lavida_checkpoint(tmp_path / "ckpt", cfg)
    raw = json.loads((ckpt / "config.json").read_text())
    del raw["vision_config"]
    raw["mm_vision_tower"] = str(tower_dir)
    (ckpt / "config.json").write_text(json.dumps(raw))
    model = shirg.load(ckpt)
    assert model.config.vision.hidden_size == 48 and model.config.vision.num_hidden_layers == 2
    # a relative name resolves against the checkpoint folder too
    raw["mm_vision_tower"] = "../siglip-small"
    (ckpt / "config.json").write_text(json.dumps(raw))
    monkeypatch.chdir("/")  # not the working directory: the checkpoint folder
    assert shirg.load(ckpt).config.vision.hidden_size == 48
    # a hub name that is no local folder keeps the so400m assumption (and this small checkpoint then fails)
    raw["mm_vision_tower"] = "google/siglip-so400m-patch14-384"
    (ckpt / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="mm_hidden_size 48 differs"):
        shirg.load(ckpt)
