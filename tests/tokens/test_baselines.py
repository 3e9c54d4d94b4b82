"""Property and case tests for the budget-matched baselines (docs/method.md section 6)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from shirg.errors import ConfigError
from shirg.tokens import select_tokens, strategy_names
from shirg.tokens.baselines import VISIONZIP_DOMINANT, tome_merge
from shirg.tokens.dual_scale import dual_scale, scaffold_size
from shirg.tokens.registry import get_strategy
from shirg.tokens.scoring import saliency
from shirg.tokens.types import KIND_HI, KIND_MERGED, KIND_POOLED, KIND_SCAFFOLD, TextContext

D = 16
NAMES = strategy_names()
BASELINES = [n for n in NAMES if n != "shirg"]
MERGING = {"tome", "visionzip"}


def make_tokens(b: int, g: int, seed: int, content=None, d: int = D):
    gen = torch.Generator().manual_seed(seed)
    hi = torch.randn(b, g * g, d, generator=gen)
    box = None if content is None else torch.tensor(content, dtype=torch.float32)
    return dual_scale(hi, box)


def make_text(b: int, d: int, seed: int, t: int = 5, e: int = 12):
    gen = torch.Generator().manual_seed(seed + 1)
    proj = torch.randn(d, e, generator=gen)
    return TextContext(project=lambda x: x @ proj.to(x.dtype), question=torch.randn(b, t, e, generator=gen))


def run(name: str, tokens, k: int, text=None, **options):
    return select_tokens(name, tokens, k, text, scaffold=False, **options)


def min_k(name: str, g: int) -> int:
    return scaffold_size(g) ** 2 if name == "shirg" else 1  # SHIRG's coverage needs K >= S*S


def expected_count(name: str, k: int) -> int:
    return round(math.sqrt(k)) ** 2 if name == "pool" else k


def raster_part(name: str, out, k: int):
    """The part of the output that must be in raster order of its index (VisionZip: the dominant tokens)."""
    if name == "visionzip":
        return out.index[:, : min(k, max(1, round(k * VISIONZIP_DOMINANT)))]
    return out.index


low, high = st.floats(0.0, 0.4), st.floats(0.6, 1.0)
boxes_st = st.tuples(low, low, high, high).map(list)  # content box (x0, y0, x1, y1)


@st.composite
def case(draw, name: str):
    g = draw(st.integers(min_value=4, max_value=12))
    k = draw(st.integers(min_value=min_k(name, g), max_value=g * g))
    b = draw(st.integers(min_value=1, max_value=3))
    seed = draw(st.integers(min_value=0, max_value=10_000))
    content = draw(st.lists(boxes_st, min_size=b, max_size=b))
    with_text = draw(st.booleans())
    return g, k, b, seed, content, with_text


# ------------------------------------------------------------------------ every registered strategy


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_shape_order_boxes_determinism_and_batch(name, data):
    g, k, b, seed, content, with_text = data.draw(case(name))
    tokens = make_tokens(b, g, seed, content)
    text = make_text(b, D, seed) if with_text else None
    out = run(name, tokens, k, text)
    m = expected_count(name, k)
    assert out.features.shape == (b, m, D)
    assert out.boxes.shape == (b, m, 4) and out.kind.shape == (b, m) and out.index.shape == (b, m)
    assert out.features.dtype == tokens.hi.dtype and out.scaffold_grid == 0 and out.grid == g
    # raster order (strictly ascending: no token is taken twice)
    part = raster_part(name, out, k)
    assert bool((part[:, 1:] > part[:, :-1]).all())
    assert bool((out.boxes >= 0).all() and (out.boxes <= 1).all())
    assert bool((out.boxes[..., 2:] > 0).all())
    allowed = {KIND_POOLED} if name == "pool" else {KIND_HI, KIND_MERGED}
    assert set(out.kind.unique().tolist()) <= allowed
    # determinism
    again = run(name, tokens, k, text)
    assert torch.equal(out.index, again.index) and torch.equal(out.features, again.features)
    assert torch.equal(out.boxes, again.boxes) and torch.equal(out.kind, again.kind)
    # a batch of B equals B runs of one
    for i in range(b):
        one_text = None
        if text is not None:
            one_text = TextContext(project=text.project, question=text.question[i : i + 1])
        one = run(name, tokens.index_batch(i), k, one_text)
        assert torch.equal(one.index[0], out.index[i])
        assert torch.equal(one.kind[0], out.kind[i])
        torch.testing.assert_close(one.features[0], out.features[i])
        torch.testing.assert_close(one.boxes[0], out.boxes[i])


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_padding_never_kept_while_real_tokens_remain(name, data):
    if name == "pool":
        return  # a resampled grid covers the whole canvas by definition
    g = data.draw(st.integers(min_value=6, max_value=12))
    seed = data.draw(st.integers(min_value=0, max_value=10_000))
    x1 = data.draw(st.floats(0.3, 0.7))
    tokens = make_tokens(1, g, seed, [[0.0, 0.0, x1, 1.0]])
    real = tokens.hi_real[0]
    n_real = int(real.sum())
    lo = min_k(name, g)
    k = data.draw(st.integers(min_value=lo, max_value=g * g))
    out = run(name, tokens, k)
    if n_real >= k:
        # for merged tokens the index is the lowest member: no member may be padding either
        assert bool(real[out.index[0]].all())
        if name in MERGING:
            assert bool((out.boxes[0, :, 0] - out.boxes[0, :, 2] / 2 <= x1 + 1e-6).all())
    else:
        assert set(torch.nonzero(real).flatten().tolist()) <= set(out.index[0].tolist())


@pytest.mark.parametrize("name", NAMES)
def test_budget_errors_name_both_numbers(name):
    tokens = make_tokens(1, 6, 0)
    with pytest.raises(ConfigError) as err:
        run(name, tokens, 37)
    assert "37" in str(err.value) and "36" in str(err.value)
    with pytest.raises(ConfigError, match="0"):
        run(name, tokens, 0)


@pytest.mark.parametrize("name", BASELINES)
def test_unknown_option_is_rejected(name):
    with pytest.raises(ConfigError, match="bogus") as err:
        run(name, make_tokens(1, 6, 0), 10, bogus=1)
    assert "valid options" in str(err.value)


@pytest.mark.parametrize("name", NAMES)
def test_select_tokens_prepends_scaffold(name):
    tokens = make_tokens(2, 8, 3)
    k = 20
    out = select_tokens(name, tokens, k, scaffold=True)
    s2 = tokens.scaffold_grid**2
    assert out.num_tokens == s2 + expected_count(name, k)
    assert out.scaffold_grid == tokens.scaffold_grid
    assert torch.equal(out.features[:, :s2], tokens.scaffold)
    assert bool((out.kind[:, :s2] == KIND_SCAFFOLD).all())
    assert bool((out.kind[:, s2:] != KIND_SCAFFOLD).all())
    assert torch.equal(out.features[:, s2:], run(name, tokens, k).features)


# ------------------------------------------------------------------------------- specific behaviour


@settings(max_examples=20, deadline=None)
@given(g=st.integers(4, 12), seed=st.integers(0, 1000), data=st.data())
def test_uniform_stride(g, seed, data):
    k = data.draw(st.integers(1, g * g))
    out = run("uniform", make_tokens(1, g, seed), k)
    n = g * g
    expected = [math.floor((i + 0.5) * n / k) for i in range(k)]
    assert out.index[0].tolist() == expected
    # with padding, the stride runs over the real tokens only
    tokens = make_tokens(1, g, seed, [[0.0, 0.0, 0.5, 1.0]])
    real = torch.nonzero(tokens.hi_real[0]).flatten()
    k = min(k, len(real))
    out = run("uniform", tokens, k)
    assert out.index[0].tolist() == [int(real[math.floor((i + 0.5) * len(real) / k)]) for i in range(k)]


def test_pool_resizes_the_grid():
    tokens = make_tokens(2, 48, 0, d=4)
    out = run("pool", tokens, 768)
    assert out.num_tokens == 784  # P = round(sqrt(768)) = 28: the budget is approximate
    grid = tokens.hi.transpose(1, 2).reshape(2, 4, 48, 48)
    ref = F.interpolate(grid, size=(28, 28), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out.features, ref.reshape(2, 4, 784).transpose(1, 2))
    assert bool((out.kind == KIND_POOLED).all())
    torch.testing.assert_close(out.boxes[0, 0], torch.tensor([0.5 / 28, 0.5 / 28, 1 / 28, 1 / 28]))


def test_random_seeds():
    tokens = make_tokens(2, 12, 0)
    a = run("random", tokens, 30, seed=0)
    assert torch.equal(a.index, run("random", tokens, 30, seed=0).index)
    assert torch.equal(a.index, run("random", tokens, 30).index)  # default seed is 0
    assert not torch.equal(a.index, run("random", tokens, 30, seed=1).index)
    assert len(set(a.index[0].tolist())) == 30


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 1000), k=st.integers(1, 63))
def test_text_topk_is_top_k_by_similarity(seed, k):
    gen = torch.Generator().manual_seed(seed)
    n, d = 64, D
    q = F.normalize(torch.randn(d, generator=gen), dim=0)
    other = torch.randn(n, d, generator=gen)
    other = F.normalize(other - (other @ q)[:, None] * q, dim=-1)  # orthogonal to q
    angle = torch.randperm(n, generator=gen).float() / n * math.pi  # distinct cosines
    scale = 1 + torch.rand(n, 1, generator=gen)  # cosine ignores the norm
    hi = (torch.cos(angle)[:, None] * q + torch.sin(angle)[:, None] * other) * scale
    tokens = dual_scale(hi[None])
    text = TextContext(project=lambda x: x, question=q[None, None])
    out = run("text-topk", tokens, k, text)
    expected = torch.argsort(angle)[:k].sort().values  # smallest angle = largest cosine
    assert out.index[0].tolist() == expected.tolist()
    # no text, or a sample without a question: saliency
    sal_top = torch.argsort(saliency(hi[None])[0], descending=True, stable=True)[:k].sort().values
    assert run("text-topk", tokens, k).index[0].tolist() == sal_top.tolist()
    no_question = torch.zeros(1, 1, dtype=torch.bool)
    silent = TextContext(project=lambda x: x, question=q[None, None], question_mask=no_question)
    assert run("text-topk", tokens, k, silent).index[0].tolist() == sal_top.tolist()


def test_text_topk_text_pool_reaches_the_strategy():
    from shirg.model.options import VisualOptions

    assert VisualOptions(text_pool="mean").strategy_options("text-topk") == {"text_pool": "mean"}
    assert VisualOptions().strategy_options("text-topk") == {"text_pool": "max"}
    gen = torch.Generator().manual_seed(0)
    tokens = dual_scale(torch.randn(1, 64, D, generator=gen))
    text = TextContext(project=lambda x: x, question=torch.randn(1, 6, D, generator=gen))
    picks = {pool: run("text-topk", tokens, 16, text, **VisualOptions(text_pool=pool).strategy_options("text-topk"))
             for pool in ("max", "mean")}
    assert torch.equal(picks["max"].index, run("text-topk", tokens, 16, text, text_pool="max").index)
    assert torch.equal(picks["mean"].index, run("text-topk", tokens, 16, text, text_pool="mean").index)
    assert not torch.equal(picks["max"].index, picks["mean"].index)


@settings(max_examples=15, deadline=None)
@given(g=st.integers(4, 12), seed=st.integers(0, 1000), data=st.data())
def test_tome_conserves_size_and_mean(g, seed, data):
    k = data.draw(st.integers(1, g * g))
    tokens = make_tokens(2, g, seed)
    groups = tome_merge(tokens, k)
    alive = groups.alive
    assert bool((alive.sum(dim=1) == k).all())
    size = groups.size * alive
    assert bool((size.sum(dim=1) == g * g).all())  # sum of areas = N
    weighted = (groups.mean() * size[..., None]).sum(dim=1) / (g * g)
    torch.testing.assert_close(weighted, tokens.hi.mean(dim=1), atol=1e-5, rtol=1e-5)
    # the strategy's output is exactly these groups, in raster order of their lowest member
    out = run("tome", tokens, k)
    for i in range(2):
        live = alive[i]
        order = torch.argsort(groups.first[i][live])
        torch.testing.assert_close(out.features[i], groups.mean()[i][live][order])
        assert torch.equal(out.index[i], groups.first[i][live][order])
        merged = groups.size[i][live][order] > 1
        assert torch.equal(out.kind[i] == KIND_MERGED, merged)


def test_tome_merges_identical_tokens_first():
    tokens = make_tokens(1, 4, 0)
    hi = tokens.hi.clone()
    hi[0, 1] = hi[0, 0]  # positions 0 (set A) and 1 (set B) identical
    tokens = dual_scale(hi)
    out = run("tome", tokens, 15)
    assert out.index[0].tolist() == [0] + list(range(2, 16))
    assert out.kind[0, 0] == KIND_MERGED
    torch.testing.assert_close(out.boxes[0, 0], torch.tensor([0.25, 0.125, 0.5, 0.25]))


@settings(max_examples=15, deadline=None)
@given(g=st.integers(4, 12), seed=st.integers(0, 1000), data=st.data())
def test_visionzip_keeps_the_most_salient(g, seed, data):
    k = data.draw(st.integers(1, g * g))
    tokens = make_tokens(1, g, seed)
    out = run("visionzip", tokens, k)
    k_dom = min(k, max(1, round(k * 54 / 64)))
    top = torch.argsort(saliency(tokens.hi)[0], descending=True, stable=True)[:k_dom].sort().values
    assert out.index[0, :k_dom].tolist() == top.tolist()
    assert bool((out.kind[0, :k_dom] == KIND_HI).all())
    torch.testing.assert_close(out.features[0, :k_dom], tokens.hi[0, top])
    # contextual tokens never reuse a dominant token
    assert not set(out.index[0, k_dom:].tolist()) & set(top.tolist())


def test_visionzip_contextual_merges_into_nearest_target():
    # 16 tokens: 2 outliers dominate, the remaining 14 form two tight groups; 2 contextual targets
    gen = torch.Generator().manual_seed(0)
    a, b, c = torch.eye(D)[:3] * 5
    hi = torch.stack([a + 0.01 * torch.randn(D, generator=gen) for _ in range(16)])
    hi[8:] = b + 0.01 * torch.randn(8, D, generator=gen)
    hi[3], hi[12] = c, -c  # the most salient
    tokens = dual_scale(hi[None])
    out = run("visionzip", tokens, 4, dominant_fraction=0.5)
    assert out.index[0, :2].tolist() == [3, 12]
    assert out.kind[0, 2:].tolist() == [KIND_MERGED, KIND_MERGED]
    group_a = [i for i in range(8) if i != 3]
    group_b = [i for i in range(8, 16) if i != 12]
    torch.testing.assert_close(out.features[0, 2], hi[group_a].mean(0))
    torch.testing.assert_close(out.features[0, 3], hi[group_b].mean(0))
    assert out.index[0, 2:].tolist() == [0, 8]


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 1000), clusters=st.integers(2, 8))
def test_divprune_takes_one_token_per_cluster_first(seed, clusters):
    gen = torch.Generator().manual_seed(seed)
    n = 64
    centres = torch.randn(clusters, D, generator=gen) * 3
    label = torch.cat([torch.arange(clusters), torch.randint(clusters, (n - clusters,), generator=gen)])
    label = label[torch.randperm(n, generator=gen)]
    hi = centres[label] + 0.01 * torch.randn(n, D, generator=gen)
    out = run("divprune", dual_scale(hi[None]), clusters)
    assert sorted(label[out.index[0]].tolist()) == list(range(clusters))


@settings(max_examples=20, deadline=None)
@given(g=st.integers(4, 12), seed=st.integers(0, 1000), data=st.data())
def test_saint_never_keeps_two_identical_tokens(g, seed, data):
    n = g * g
    i = 2 * data.draw(st.integers(0, n // 2 - 1))  # even position: set A in the first step
    j = 2 * data.draw(st.integers(0, n // 2 - 1)) + 1  # odd position: set B
    k = data.draw(st.integers(1, n - 1))
    hi = make_tokens(1, g, seed).hi.clone()
    hi[0, j] = hi[0, i]
    out = run("saint", dual_scale(hi), k)
    kept = set(out.index[0].tolist())
    assert not {i, j} <= kept
    assert out.index[0].unique().numel() == k


def test_saint_drops_rather_than_merges():
    tokens = make_tokens(2, 8, 1)
    out = run("saint", tokens, 20)
    assert bool((out.kind == KIND_HI).all())
    torch.testing.assert_close(out.features, torch.stack([tokens.hi[b, out.index[b]] for b in range(2)]))


@pytest.mark.parametrize("name", ["saint", "tome", "visionzip"])
def test_fraction_options_are_checked(name):
    key = "dominant_fraction" if name == "visionzip" else "step_fraction"
    with pytest.raises(ConfigError, match=key):
        run(name, make_tokens(1, 6, 0), 10, **{key: 0.0})


def test_strategies_follow_input_dtype():
    tokens = make_tokens(1, 8, 0)
    tokens.hi = tokens.hi.to(torch.bfloat16)
    for name in BASELINES:
        out = get_strategy(name)(tokens, 20)
        assert out.features.dtype == torch.bfloat16, name
