"""Pooling as an explicit setting, and LaViDa's 729-token single view (``lavida-pad``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import shirg
from shirg.errors import ConfigError
from shirg.model.anyres import expand2square
from shirg.model.profile import Stopwatch
from shirg.model.visual import lavida_visual
from shirg.testing import tiny_lavida_config, write_tiny_lavida_checkpoint
from shirg.vision.preprocess import to_tensor


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("pool")
    pooled = shirg.load(write_tiny_lavida_checkpoint(root / "hd", seed=1))
    unpooled = shirg.load(write_tiny_lavida_checkpoint(root / "low", tiny_lavida_config(mm_spatial_pool_mode=None),
                                                       seed=1))
    return pooled, unpooled


def _img(w=250, h=160):
    rng = np.random.default_rng(5)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def test_single_view_729_unpooled_no_newline(models):
    model = models[0]
    img = _img()
    out = lavida_visual(model, [img], "lavida-pad", Stopwatch(model.device))[0]
    side = model.config.vision.image_size // model.config.vision.patch_size
    assert out.shape[0] == side * side  # 729 at so400m's 384 / 14
    # the definition: the mean-colour-padded square, resized to the view, through tower + projector
    view = model.config.vision.image_size
    pixels = to_tensor(expand2square(img).resize((view, view), Image.Resampling.BICUBIC))[None]
    want = model.project(model.model.vision_tower(pixels))[0]
    assert torch.allclose(out, want, atol=1e-6)
    assert not torch.isclose(out[-1], model.model.image_newline).all()


def test_pool_follows_checkpoint_and_flag(models):
    pooled, unpooled = models
    img, watch = _img(), Stopwatch(torch.device("cpu"))
    side = pooled.config.vision.image_size // pooled.config.vision.patch_size
    pooled_side = (side + 1) // 2  # LaViDa: ceil(27 / 2) = 14
    for model, default in ((pooled, pooled_side), (unpooled, side)):
        auto = lavida_visual(model, [img], "lowres", watch)[0]
        assert auto.shape[0] == default * default + 1
        on = lavida_visual(model, [img], "lowres", watch, pool=True)[0]
        off = lavida_visual(model, [img], "lowres", watch, pool=False)[0]
        assert on.shape[0] == pooled_side**2 + 1 and off.shape[0] == side * side + 1
    # pooled = bilinear resize of the unpooled grid (after the projector), newline last
    off = lavida_visual(pooled, [img], "lowres", watch, pool=False)[0]
    on = lavida_visual(pooled, [img], "lowres", watch, pool=True)[0]
    grid = off[:-1].reshape(side, side, -1).permute(2, 0, 1)[None]
    want = F.interpolate(grid, size=(pooled_side, pooled_side), mode="bilinear", align_corners=False)
    assert torch.allclose(on[:-1], want[0].permute(1, 2, 0).reshape(-1, on.shape[1]), atol=1e-5)


def test_answer_pool_option(models):
    model = models[0]
    kw = dict(gen_length=4, steps=2, block_length=4)
    a = model.answer([_img()], ["What is shown?"], mode="lowres", pool="off", **kw)[0]
    b = model.answer([_img()], ["What is shown?"], mode="lavida-pad", **kw)[0]
    side = model.config.vision.image_size // model.config.vision.patch_size
    assert a.meta["visual_tokens"] == side * side + 1 and a.meta["pool"] == "off"
    assert b.meta["visual_tokens"] == side * side and b.meta["mode"] == "lavida-pad"
    with pytest.raises(ConfigError, match="auto, on, off"):
        model.answer([_img()], ["What is shown?"], mode="lowres", pool="yes", **kw)
