"""Vision tower loading, preprocessing and position interpolation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from conftest import tiny_tower, write_vision_folder
from shirg.errors import CheckpointError, ConfigError, ImageError
from shirg.vision.encode import encode_dual_scale
from shirg.vision.preprocess import load_image, prepare_image
from shirg.vision.siglip import load_vision_tower


def test_interpolation_at_native_size_equals_plain_model():
    tower = tiny_tower()
    x = torch.randn(2, 3, 384, 384)
    ours = tower(x)
    m = tower.vision_model
    plain = m(x, output_hidden_states=True).hidden_states[-1]  # before post-LN, no interpolation
    assert ours.shape == (2, 729, 32)
    torch.testing.assert_close(ours, plain, rtol=0, atol=0)
    assert not torch.allclose(ours, m(x).last_hidden_state), "features must be taken before post-LN"
    emb = m.embeddings
    torch.testing.assert_close(emb(x, interpolate_pos_encoding=True), emb(x, interpolate_pos_encoding=False),
                               rtol=0, atol=0)


def test_672_gives_2304_tokens_with_bicubic_table():
    tower = tiny_tower()
    out = tower(torch.randn(1, 3, 672, 672))
    assert out.shape == (1, 2304, 32)
    emb = tower.vision_model.embeddings
    table = emb.position_embedding.weight.reshape(1, 27, 27, -1).permute(0, 3, 1, 2)
    expect = torch.nn.functional.interpolate(table, size=(48, 48), mode="bicubic", align_corners=False)
    got = emb.interpolate_pos_encoding(torch.zeros(1, 2304, 32), 672, 672)
    torch.testing.assert_close(got, expect.permute(0, 2, 3, 1).reshape(1, 2304, -1))
    with pytest.raises(ConfigError, match="multiple of 14"):
        tower(torch.randn(1, 3, 400, 400))


@pytest.mark.parametrize("layout", ["lavida", "siglip"])
def test_load_tiny_tower_from_folder(tmp_path, layout):
    tower = tiny_tower(seed=3)
    folder = write_vision_folder(tmp_path / layout, tower, layout)
    loaded = load_vision_tower(folder)
    assert loaded.config.num_hidden_layers == 2
    x = torch.randn(1, 3, 672, 672)
    torch.testing.assert_close(loaded(x), tower(x))


def test_load_errors_name_the_keys(tmp_path, vision_folder):
    state = load_file(str(vision_folder / "model.safetensors"))
    key = "model.vision_tower.vision_tower.vision_model.encoder.layers.1.mlp.fc1.weight"
    broken = dict(state)
    broken["model.vision_tower.vision_tower.vision_model.encoder.layers.1.mlp.fc_1.weight"] = broken.pop(key)
    save_file(broken, str(vision_folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing: encoder\.layers\.1\.mlp\.fc1\.weight.*unexpected: .*fc_1"):
        load_vision_tower(vision_folder)
    wrong = dict(state)
    wrong[key] = torch.zeros(3, 3)
    save_file(wrong, str(vision_folder / "model.safetensors"))
    match = r"wrong shape: encoder\.layers\.1\.mlp\.fc1\.weight \(checkpoint \(3, 3\)"
    with pytest.raises(CheckpointError, match=match):
        load_vision_tower(vision_folder)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_vision_tower(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_vision_tower(tmp_path / "empty")


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "LA", "1", "CMYK"])
def test_load_image_converts_modes(tmp_path, mode):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8))
    if mode == "I;16":
        img = Image.fromarray(np.arange(600, dtype=np.uint16).reshape(20, 30) * 100)
        assert img.mode == "I;16"
    else:
        img = rgb.convert(mode)
    path = tmp_path / ("x.tiff" if mode in ("I;16", "CMYK") else "x.png")
    img.save(path)
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (30, 20)
    if mode == "I;16":
        arr = np.asarray(out)[..., 0]
        assert arr.max() > 200 and arr.min() == 0, "16-bit range is scaled, not clipped"


def test_rgba_transparent_becomes_white():
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert np.asarray(load_image(img)).min() == 255


def test_bad_images_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ImageError, match="cannot read image"):
        load_image(bad)
    with pytest.raises(ImageError, match="does not exist"):
        load_image(tmp_path / "missing.png")


def test_prepare_pads_keeping_aspect_and_squash():
    img = Image.new("RGB", (200, 100), (255, 0, 0))
    p = prepare_image(img, 672)
    assert p.pixels.shape == (3, 672, 672)
    assert p.content_box == (0.0, 168 / 672, 1.0, 504 / 672)
    # padding is grey (about 0 after normalization), content is red (1, -1, -1)
    torch.testing.assert_close(p.pixels[:, 10, 10], torch.full((3,), 127 / 255 * 2 - 1))
    torch.testing.assert_close(p.pixels[:, 336, 336], torch.tensor([1.0, -1.0, -1.0]))
    sq = prepare_image(img, 672, resize="squash")
    assert sq.content_box == (0.0, 0.0, 1.0, 1.0)
    torch.testing.assert_close(sq.pixels[:, 5, 5], torch.tensor([1.0, -1.0, -1.0]))
    with pytest.raises(ConfigError, match="multiple of the patch size"):
        prepare_image(img, 500)
    with pytest.raises(ConfigError, match="unknown resize mode"):
        prepare_image(img, 672, resize="crop")


def test_encode_dual_scale_marks_padding(chart_image):
    tokens, prepared = encode_dual_scale(tiny_tower(), [chart_image, chart_image], 672)
    assert tokens.hi.shape == (2, 2304, 32) and tokens.scaffold.shape == (2, 144, 32)
    rows = tokens.hi_real[0].reshape(48, 48).any(1)
    # 500 x 300 on 672: content height 403 px, top padding 134 px -> rows 9..38 touch the image
    assert rows.nonzero().flatten().tolist() == list(range(9, 39))
    torch.testing.assert_close(tokens.hi[0], tokens.hi[1])


def test_rebuild_buffers_recreates_position_ids_built_on_meta():
    from shirg.vision.siglip import VisionTower, vision_config

    cfg = vision_config(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                        image_size=56)
    with torch.device("meta"):
        tower = VisionTower(cfg)
    tower = tower.to_empty(device="cpu")
    tower.rebuild_buffers()
    ids = tower.vision_model.embeddings.position_ids
    assert ids.device.type == "cpu" and torch.equal(ids, torch.arange(16).expand((1, -1)))
