import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from shirg.errors import ConfigError
from shirg.model.anyres import (
    DEFAULT_PINPOINTS,
    LOWRES_TOKEN_COUNT,
    anyres_views,
    expand2square,
    lavida_token_count,
    pool_view_tokens,
    select_best_resolution,
    unpad_grid,
    unpad_merge,
)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((1000, 1000), (768, 768)),
        ((800, 600), (768, 768)),
        ((1000, 500), (768, 384)),  # ties with (768,768) and (1152,384) on pixels; least waste wins
        ((500, 1000), (384, 768)),
        ((2000, 400), (1152, 384)),
        ((400, 2000), (384, 1152)),
        ((384, 384), (384, 768)),  # every pinpoint keeps all pixels; (384,768)/(768,384) waste least; first
    ],
)
def test_select_best_resolution(size, expected):
    assert select_best_resolution(size, DEFAULT_PINPOINTS) == expected


def test_select_best_resolution_tie_goes_to_first():
    assert select_best_resolution((100, 100), [(768, 384), (384, 768)]) == (768, 384)
    assert select_best_resolution((100, 100), [(384, 768), (768, 384)]) == (384, 768)


def test_select_best_resolution_does_not_count_upscaling():
    # Capped at the image's own pixels, so the bigger square pinpoint is not preferred.
    assert select_best_resolution((100, 100), [(768, 768), (384, 384)]) == (384, 384)


@pytest.mark.parametrize(
    ("size", "grid"),
    [
        ((1000, 1000), (2, 2)), ((1000, 500), (1, 2)), ((500, 1000), (2, 1)),
        ((2000, 400), (1, 3)), ((384, 384), (2, 1)),
    ],
)
def test_anyres_views_count_and_sizes(size, grid):
    views, got = anyres_views(Image.new("RGB", size, (200, 10, 10)))
    assert got == grid
    assert len(views) == 1 + grid[0] * grid[1]
    assert all(v.size == (384, 384) and v.mode == "RGB" for v in views)


def test_anyres_views_padding_is_black_and_centred():
    # 384x384 -> pinpoint (384,768): the image fills rows 192..575 of the padded canvas.
    views, grid = anyres_views(Image.new("RGB", (384, 384), (255, 255, 255)))
    assert grid == (2, 1)
    base, top, bottom = views
    assert base.getpixel((0, 0)) == (255, 255, 255)
    assert top.getpixel((10, 100)) == (0, 0, 0) and top.getpixel((10, 300)) == (255, 255, 255)
    assert bottom.getpixel((10, 100)) == (255, 255, 255) and bottom.getpixel((10, 300)) == (0, 0, 0)


def test_anyres_tiles_are_row_major():
    img = Image.new("RGB", (768, 768))
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]):
        r, c = divmod(i, 2)
        img.paste(Image.new("RGB", (384, 384), colour), (c * 384, r * 384))
    views, grid = anyres_views(img)
    assert grid == (2, 2)
    centres = [v.getpixel((192, 192)) for v in views[1:]]
    assert centres == [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]


@pytest.mark.parametrize(
    ("size", "count"), [((1000, 1000), 1008), ((800, 600), 834), ((1000, 500), 602), ((384, 384), 406)]
)
def test_lavida_token_counts(size, count):
    assert lavida_token_count(*size) == count


def test_lavida_token_count_unpooled():
    # 1000x1000: 2x2 tiles of 27 -> 54 rows x (54 + 1) + 729 base.
    assert lavida_token_count(1000, 1000, pooled=False) == 729 + 54 * 55


@settings(max_examples=60, deadline=None)
@given(st.integers(16, 4000), st.integers(16, 4000))
def test_lavida_token_count_range(w, h):
    assert 196 <= lavida_token_count(w, h) <= 1008


def test_tiny_extreme_image_keeps_no_tile_rows():
    # 225x16 upscales into every pinpoint, so the least-waste tie picks (384, 768) (tall!) and the
    # unpadded 28x14 grid keeps int(16 * 14 / 225) = 0 rows: only the base view's 196 tokens remain.
    assert select_best_resolution((225, 16)) == (384, 768)
    assert lavida_token_count(225, 16) == 196


def test_unpad_removes_symmetric_rows():
    # Grid 4 rows x 8 cols, image aspect 4:1 -> new_h = int(100 * 8 / 400) = 2, padding 1 row each end.
    x = torch.arange(32.0).reshape(4, 8, 1)
    out = unpad_grid(x, (400, 100))
    assert out.shape == (2, 8, 1)
    assert torch.equal(out, x[1:3])


def test_unpad_removes_symmetric_cols_and_keeps_matching_aspect():
    x = torch.arange(32.0).reshape(8, 4, 1)
    assert torch.equal(unpad_grid(x, (100, 400)), x[:, 1:3])
    assert torch.equal(unpad_grid(x, (50, 100)), x)


def test_unpad_merge_layout():
    # 1x2 tiles of 2x2 (E=1) -> a 2x4 grid. Aspect 2:1 matches: nothing removed. Aspect 8:1:
    # new_h = int(100 * 4 / 800) = 0, pad = 1 from each end: no rows left.
    tiles = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]]).unsqueeze(-1)
    base = torch.tensor([[-1.0], [-2.0]])
    newline = torch.tensor([9.0])
    out = unpad_merge(base, tiles, (1, 2), (200, 100), newline)
    expected = [-1, -2, 1, 2, 5, 6, 9, 3, 4, 7, 8, 9]
    assert out.squeeze(-1).tolist() == expected
    out = unpad_merge(base, tiles, (1, 2), (800, 100), newline)
    assert out.squeeze(-1).tolist() == [-1, -2]  # every row was padding
    tall = unpad_merge(base, tiles, (2, 1), (100, 200), newline)
    assert tall.squeeze(-1).tolist() == [-1, -2, 1, 2, 9, 3, 4, 9, 5, 6, 9, 7, 8, 9]


def test_unpad_merge_rejects_wrong_tile_count():
    with pytest.raises(ConfigError):
        unpad_merge(torch.zeros(4, 3), torch.zeros(3, 2, 2, 3), (2, 2), (100, 100), torch.zeros(3))


def test_pool_view_tokens_shape_and_values():
    x = torch.randn(5, 27 * 27, 8)
    out = pool_view_tokens(x)
    assert out.shape == (5, 196, 8)
    const = torch.full((1, 729, 2), 3.0)
    assert torch.allclose(pool_view_tokens(const), torch.full((1, 196, 2), 3.0))
    # Bilinear, align_corners=False on a linear ramp along columns.
    ramp = torch.arange(27.0).repeat(27).reshape(1, 729, 1)
    cols = pool_view_tokens(ramp).reshape(14, 14)[0]
    expected = torch.nn.functional.interpolate(
        torch.arange(27.0).reshape(1, 1, 1, 27).expand(1, 1, 27, 27), size=(14, 14), mode="bilinear",
        align_corners=False,
    )[0, 0, 0]
    assert torch.allclose(cols, expected)
    assert not torch.allclose(cols, torch.arange(0.0, 28.0, 2.0))  # not a plain stride-2 pick


def test_pool_view_tokens_rejects_non_square():
    with pytest.raises(ConfigError):
        pool_view_tokens(torch.zeros(1, 700, 4))


def test_expand2square_colour_and_centring():
    out = expand2square(Image.new("RGB", (100, 40), (255, 0, 0)))
    assert out.size == (100, 100)
    assert out.getpixel((50, 0)) == (127, 127, 127) and out.getpixel((50, 99)) == (127, 127, 127)
    assert out.getpixel((50, 30)) == (255, 0, 0) and out.getpixel((50, 69)) == (255, 0, 0)
    assert out.getpixel((50, 29)) == (127, 127, 127) and out.getpixel((50, 70)) == (127, 127, 127)
    tall = expand2square(Image.new("RGB", (40, 100), (0, 255, 0)), fill=(1, 2, 3))
    assert tall.size == (100, 100) and tall.getpixel((0, 50)) == (1, 2, 3)
    assert tall.getpixel((30, 50)) == (0, 255, 0) and tall.getpixel((70, 50)) == (1, 2, 3)
    assert LOWRES_TOKEN_COUNT == 197
