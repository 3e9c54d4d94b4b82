"""Property and case tests for the SHIRG token core (docs/method.md sections 1-5)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shirg.errors import ConfigError
from shirg.tokens import ShirgOptions, select_shirg, select_tokens
from shirg.tokens.coords import CoordinateEmbedding, count_parameters
from shirg.tokens.dual_scale import cell_of_boxes, default_k, dual_scale, scaffold_size
from shirg.tokens.relevance_head import RelevanceHead, learned_scores
from shirg.tokens.scoring import neighbour_distance, relevance, saliency, shirg_scores, text_similarity
from shirg.tokens.selection import Candidates, covered_topk, merge_neighbours
from shirg.tokens.types import KIND_HI, KIND_MERGED, KIND_SCAFFOLD, TextContext

D = 8


def make_tokens(b: int, g: int, seed: int, content=None, d: int = D):
    gen = torch.Generator().manual_seed(seed)
    hi = torch.randn(b, g * g, d, generator=gen)
    box = None if content is None else torch.tensor(content, dtype=torch.float32)
    return dual_scale(hi, box)


def make_text(b: int, d: int, t: int, seed: int):
    gen = torch.Generator().manual_seed(seed + 1)
    proj = torch.randn(d, 12, generator=gen)
    q = torch.randn(b, t, 12, generator=gen)
    return TextContext(project=lambda x: x @ proj, question=q)


grids = st.integers(min_value=4, max_value=14)


@st.composite
def case(draw):
    g = draw(grids)
    s = scaffold_size(g)
    k = draw(st.integers(min_value=s * s, max_value=g * g))
    b = draw(st.integers(min_value=1, max_value=3))
    seed = draw(st.integers(min_value=0, max_value=10_000))
    return g, k, b, seed


# ---------------------------------------------------------------- dual scale


def test_dual_scale_shapes_and_boxes():
    t = make_tokens(2, 48, 0)
    assert t.hi.shape == (2, 2304, D)
    assert t.scaffold.shape == (2, 144, D)
    assert t.grid == 48 and t.scaffold_grid == 12
    # scaffold token 0 is the mean of the top-left 4 x 4 block
    block = t.hi[0].reshape(48, 48, D)[:4, :4].reshape(16, D).mean(0)
    torch.testing.assert_close(t.scaffold[0, 0], block)
    torch.testing.assert_close(t.hi_boxes[0, 0], torch.tensor([0.5 / 48, 0.5 / 48, 1 / 48, 1 / 48]))
    torch.testing.assert_close(t.scaffold_boxes[0, 13], torch.tensor([6 / 48, 6 / 48, 4 / 48, 4 / 48]))
    assert default_k(48) == 768


def test_dual_scale_adaptive_when_not_multiple_of_four():
    t = make_tokens(1, 27, 0)
    assert t.scaffold_grid == 7 and t.scaffold.shape == (1, 49, D)
    # adaptive pooling bins cover the whole grid: the last cell reads rows/cols 23..26
    last = t.hi[0].reshape(27, 27, D)[23:, 23:].reshape(-1, D).mean(0)
    torch.testing.assert_close(t.scaffold[0, -1], last)


def test_padding_mask_from_content_box():
    # image occupies the middle half vertically: rows 12..35 of 48 are real
    t = make_tokens(1, 48, 0, content=[[0.0, 0.25, 1.0, 0.75]])
    rows = t.hi_real[0].reshape(48, 48).any(dim=1)
    assert rows.nonzero().flatten().tolist() == list(range(12, 36))
    assert t.scaffold_real[0].reshape(12, 12).any(dim=1).nonzero().flatten().tolist() == list(range(3, 9))


def test_dual_scale_rejects_non_square():
    with pytest.raises(ConfigError, match="square grid"):
        dual_scale(torch.randn(1, 10, D))
    with pytest.raises(ConfigError, match="square grid"):
        dual_scale(torch.randn(1, 0, D))


# ---------------------------------------------------------------- scoring


def test_neighbour_distance_border_and_uniform():
    # constant features: all neighbour distances 0
    assert neighbour_distance(torch.ones(1, 16, 4), 4).abs().max() == 0
    # one odd token: it and its 8 neighbours get a positive distance, far tokens get 0
    x = torch.zeros(1, 25, 2)
    x[..., 0] = 1
    x[0, 12] = torch.tensor([0.0, 1.0])
    nbr = neighbour_distance(x, 5).reshape(5, 5)
    assert nbr[2, 2] == pytest.approx(2**0.5)
    assert nbr[1, 1] == pytest.approx(2**0.5 / 8)
    assert nbr[0, 0] == 0
    # corner token with the odd one as a neighbour averages over 3 neighbours
    x2 = torch.zeros(1, 9, 2)
    x2[..., 0] = 1
    x2[0, 4] = torch.tensor([0.0, 1.0])
    assert neighbour_distance(x2, 3)[0, 0] == pytest.approx(2**0.5 / 3)


def test_text_similarity_max_and_mean():
    v = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    q = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [5.0, 5.0]]])
    mask = torch.tensor([[True, True, False]])
    mx = text_similarity(v, q, mask, "max")
    torch.testing.assert_close(mx, torch.tensor([[1.0, 2**-0.5]]))
    mean = text_similarity(v, q, mask, "mean")
    torch.testing.assert_close(mean, torch.tensor([[(1 + 2**-0.5) / 2, 2**-0.5 / 2]]))


def test_saliency_fallback_for_sample_without_question():
    t = make_tokens(2, 8, 3)
    text = make_text(2, D, 5, 3)
    text.question_mask = torch.tensor([[True] * 5, [False] * 5])
    terms = shirg_scores(t, text)
    assert terms.used_text.tolist() == [True, False]
    alone = shirg_scores(t.index_batch(1), None)
    torch.testing.assert_close(terms.sim[1], alone.sim[0])
    with pytest.raises(ConfigError, match="3 values"):
        shirg_scores(t, text, weights=(1.0, 0.0))
    with pytest.raises(ConfigError, match="unknown score source"):
        shirg_scores(t, text, source="attention")


def test_relevance_is_the_sim_term_of_shirg_scores():
    t = make_tokens(2, 8, 4)
    text = make_text(2, D, 5, 4)
    text.question_mask = torch.tensor([[True] * 3 + [False] * 2, [False] * 5])
    for pool in ("max", "mean"):
        sim, used = relevance(t, text, pool)
        terms = shirg_scores(t, text, text_pool=pool)
        torch.testing.assert_close(sim, terms.sim)
        assert used.tolist() == terms.used_text.tolist() == [True, False]
    sal, used = relevance(t, None)
    torch.testing.assert_close(sal, saliency(t.hi.float()))
    assert used.tolist() == [False, False]
    torch.testing.assert_close(shirg_scores(t, text, source="saliency").sim, sal)
    with pytest.raises(ConfigError, match="does not match image batch"):
        relevance(t.index_batch(0), text)


def cell_similarity(t, text, stride: int, b: int, row: int, col: int) -> float:
    """Sim of token (row, col) with stride s, from the definition: the mean of the hi tokens of its
    s x s cell (cut by the grid's edge), projected, max cosine over the question's real tokens."""
    g = t.grid
    r0, c0 = row // stride * stride, col // stride * stride
    cell = [t.hi[b, r * g + c] for r in range(r0, min(r0 + stride, g)) for c in range(c0, min(c0 + stride, g))]
    v = text.project(torch.stack(cell).mean(0)[None])[0]
    q = text.question[b][text.mask()[b]]
    return max(float(torch.nn.functional.cosine_similarity(v, qj, dim=0)) for qj in q)


@pytest.mark.parametrize("grid", [6, 7])
@pytest.mark.parametrize("stride", [2, 3])
def test_sim_stride_scores_each_token_by_its_cells_mean(grid, stride):
    t = make_tokens(2, grid, 5)
    text = make_text(2, D, 4, 5)
    text.question_mask = torch.tensor([[True] * 3 + [False], [True] * 4])
    calls = []
    project = text.project
    text.project = lambda x: calls.append(x.shape[1]) or project(x)
    sim, used = relevance(t, text, sim_stride=stride)
    cells = -(-grid // stride)
    assert calls == [cells * cells] and used.tolist() == [True, True]  # one projection per cell, not per token
    for b in range(2):
        for r in range(grid):
            for c in range(grid):
                assert float(sim[b, r * grid + c]) == pytest.approx(cell_similarity(t, text, stride, b, r, c),
                                                                    abs=1e-5)
    torch.testing.assert_close(shirg_scores(t, text, sim_stride=stride).sim, sim)
    torch.testing.assert_close(relevance(t, text, sim_stride=1)[0], relevance(t, text)[0])
    # saliency samples ignore the stride; a stride outside 1..G is refused
    torch.testing.assert_close(shirg_scores(t, text, source="saliency", sim_stride=stride).sim, saliency(t.hi))
    for bad in (0, grid + 1):
        with pytest.raises(ConfigError, match="sim stride"):
            relevance(t, text, sim_stride=bad)


def test_sim_stride_reaches_the_head_and_the_selection():
    t = make_tokens(1, 8, 9)
    text = make_text(1, D, 4, 9)
    head = RelevanceHead(12, rank=4)
    untrained = learned_scores(t, text, head, sim_stride=2).score.detach()
    torch.testing.assert_close(untrained, shirg_scores(t, text, sim_stride=2).score)
    with torch.no_grad():
        head.scale.fill_(3.0)
    sim = learned_scores(t, text, head, sim_stride=2).sim.detach().reshape(8, 8)
    # the head's term is per cell too: the four tokens of every 2 x 2 cell share one Sim
    assert torch.equal(sim, sim[::2, ::2].repeat_interleave(2, 0).repeat_interleave(2, 1))
    assert not torch.allclose(sim, shirg_scores(t, text, sim_stride=2).sim.reshape(8, 8))
    opts = ShirgOptions(weights=(1.0, 0.0, 0.0), coverage=False, merge=False)
    per_token = select_shirg(t, 16, text, opts).index
    strided = select_shirg(t, 16, text, ShirgOptions(weights=(1.0, 0.0, 0.0), coverage=False, merge=False,
                                                     sim_stride=2)).index
    expect = torch.sort(shirg_scores(t, text, sim_stride=2).sim[0], descending=True, stable=True).indices[:16]
    assert strided[0].tolist() == expect.sort().values.tolist() and not torch.equal(per_token, strided)


@settings(max_examples=30, deadline=None)
@given(case())
def test_weights_one_zero_zero_rank_exactly_by_sim(c):
    g, k, b, seed = c
    t = make_tokens(b, g, seed)
    text = make_text(b, D, 4, seed)
    opts = ShirgOptions(weights=(1.0, 0.0, 0.0), coverage=False, merge=False)
    out = select_shirg(t, k, text, opts)
    sim = shirg_scores(t, text).sim
    for i in range(b):
        expect = torch.sort(sim[i], descending=True, stable=True).indices[:k].sort().values
        assert out.index[i].tolist() == expect.tolist()


# ---------------------------------------------------------------- selection properties


@settings(max_examples=60, deadline=None)
@given(case(), st.booleans())
def test_selection_properties(c, merge):
    g, k, b, seed = c
    t = make_tokens(b, g, seed)
    opts = ShirgOptions(merge=merge)
    out = select_shirg(t, k, make_text(b, D, 3, seed), opts)
    assert out.features.shape == (b, k, D)
    idx = out.index
    assert (idx[:, 1:] > idx[:, :-1]).all(), "raster order, no duplicates"
    cells = cell_of_boxes(out.boxes, t.scaffold_grid)
    for i in range(b):
        assert set(cells[i].tolist()) == set(range(t.scaffold_grid**2)), "every cell covered"
    again = select_shirg(t, k, make_text(b, D, 3, seed), opts)
    assert torch.equal(again.index, idx) and torch.equal(again.features, out.features)


@settings(max_examples=40, deadline=None)
@given(case())
def test_batch_equals_single_runs(c):
    g, k, b, seed = c
    t = make_tokens(b, g, seed, content=[[0.0, 0.1 * i, 1.0, 1.0 - 0.1 * i] for i in range(b)])
    text = make_text(b, D, 3, seed)
    out = select_tokens("shirg", t, k, text)
    for i in range(b):
        one_text = TextContext(project=text.project, question=text.question[i : i + 1])
        one = select_tokens("shirg", t.index_batch(i), k, one_text)
        assert torch.equal(one.index[0], out.index[i])
        torch.testing.assert_close(one.features[0], out.features[i])
        torch.testing.assert_close(one.boxes[0], out.boxes[i])


@settings(max_examples=20, deadline=None)
@given(grids, st.integers(0, 1000))
def test_k_equals_all_tokens_keeps_everything(g, seed):
    t = make_tokens(1, g, seed)
    out = select_shirg(t, g * g, None, ShirgOptions())
    assert out.index[0].tolist() == list(range(g * g))
    assert (out.kind == KIND_HI).all(), "no merging when nothing may be dropped"


@settings(max_examples=40, deadline=None)
@given(case(), st.floats(0.1, 0.6))
def test_padding_never_chosen_while_real_remain(c, frac):
    g, k, b, seed = c
    top = round(frac * 10) / 20  # 0.05 .. 0.3 of the canvas is padding at top and bottom
    t = make_tokens(b, g, seed, content=[[0.0, top, 1.0, 1.0 - top]] * b)
    out = select_shirg(t, k, None, ShirgOptions())
    real = t.hi_real
    for i in range(b):
        n_real = int(real[i].sum())
        chosen_real = int(real[i][out.index[i]].sum())
        assert chosen_real == min(k, n_real)


def test_coverage_exempts_padding_cells_and_breaks_ties_low():
    g = 8
    t = dual_scale(torch.zeros(1, g * g, D), torch.tensor([[0.0, 0.0, 1.0, 0.5]]))
    score = torch.zeros(1, g * g)
    cand = Candidates.from_tokens(t, score)
    idx = covered_topk(cand.score, cand.boxes, cand.real, cand.alive, 4, t.scaffold_grid)
    # all scores tie: coverage takes the lowest index of each real cell (2 real cells of 4)
    # then the lowest remaining indices; padding rows 4..7 are never taken
    assert idx[0].tolist() == [0, 1, 2, 4]


def test_invalid_budget_errors_name_both_numbers():
    t = make_tokens(1, 8, 0)
    with pytest.raises(ConfigError, match=r"K = 65 .* 64"):
        select_shirg(t, 65)
    with pytest.raises(ConfigError, match=r"K = 3 .* 4 coverage cells"):
        select_shirg(t, 3)
    with pytest.raises(ConfigError, match="unknown strategy 'nope'.*shirg"):
        select_tokens("nope", t, 16)


# ---------------------------------------------------------------- merging


@settings(max_examples=40, deadline=None)
@given(case(), st.floats(0.01, 1.0))
def test_merging_conserves_area_and_mean_feature(c, eps):
    g, k, b, seed = c
    t = make_tokens(b, g, seed)
    score = shirg_scores(t).score
    cand = merge_neighbours(Candidates.from_tokens(t, score), g, k, eps)
    alive = cand.alive.float()
    assert (cand.alive.sum(1) >= k).all(), "never fewer than K selectable"
    torch.testing.assert_close((cand.area * alive).sum(1), torch.full((b,), float(g * g)))
    w = (cand.area * alive)[..., None]
    torch.testing.assert_close((cand.features * w).sum(1) / (g * g), t.hi.mean(1), atol=1e-5, rtol=1e-5)
    # merged tokens' boxes are unions of 2 x 2 tokens
    m = (cand.kind == KIND_MERGED) & cand.alive
    if m.any():
        torch.testing.assert_close(cand.boxes[m][:, 2:], torch.full_like(cand.boxes[m][:, 2:], 2 / g))


def test_merging_stops_at_k_and_prefers_flat_blocks():
    g = 8
    x = torch.linspace(0, 1, g)
    feats = (x[:, None] + 0 * x[None, :]).reshape(1, g * g, 1).expand(1, g * g, 4).contiguous()
    t = dual_scale(feats)
    score = torch.arange(g * g, dtype=torch.float32)[None] / 1000.0  # tiny spread everywhere
    score[0, 0] = 100.0  # block 0 has a huge spread: never merged
    # 16 blocks, 15 eligible; K = 40 allows (64 - 40) // 3 = 8 merges
    cand = merge_neighbours(Candidates.from_tokens(t, score), g, 40, eps=0.05)
    assert int(cand.alive.sum()) == 64 - 3 * 8
    merged = ((cand.kind == KIND_MERGED) & cand.alive)[0].nonzero().flatten().tolist()
    assert 0 not in merged and len(merged) == 8
    out = select_shirg(t, 40, None, ShirgOptions(merge=True))
    assert out.num_tokens == 40


# ---------------------------------------------------------------- scaffold + coordinates


def test_select_tokens_prepends_scaffold():
    t = make_tokens(2, 12, 1)
    out = select_tokens("shirg", t, 48, None)
    assert out.num_tokens == 9 + 48
    assert (out.kind[:, :9] == KIND_SCAFFOLD).all() and (out.kind[:, 9:] != KIND_SCAFFOLD).all()
    torch.testing.assert_close(out.features[:, :9], t.scaffold)


def test_coordinate_embedding_starts_at_zero_and_trains():
    emb = CoordinateEmbedding()
    assert 140_000 < count_parameters(emb) < 160_000
    feats = torch.randn(2, 5, 1152)
    boxes = torch.rand(2, 5, 4)
    assert torch.equal(emb.add_to(feats, boxes), feats)
    loss = emb(boxes).pow(2).sum() + emb(boxes).sum()
    loss.backward()
    assert emb.coord_out.weight.grad.abs().sum() > 0
    where = torch.tensor([[True, False, True, False, True]] * 2)
    with torch.no_grad():
        emb.coord_out.bias.fill_(1.0)
    out = emb.add_to(feats, boxes, where)
    assert torch.equal(out[:, 1], feats[:, 1]) and not torch.equal(out[:, 0], feats[:, 0])


def test_merging_never_forces_padding_into_the_selection():
    # G = 11 with 44 real tokens and K = 42: merging real blocks must stop while 42 real remain
    gen = torch.Generator().manual_seed(26)
    hi = torch.randn(1, 121, D, generator=gen).cumsum(1) * 0.01  # smooth: many flat blocks
    t = dual_scale(hi, torch.tensor([[0.0, 0.0, 0.3125, 1.0]]))
    n_real = int(t.hi_real.sum())
    out = select_shirg(t, 42, None, ShirgOptions(merge=True, merge_eps=1.0, coverage=False))
    assert int(t.hi_real[0][out.index[0]].sum()) == 42 <= n_real


def test_gradients_reach_kept_and_merged_features():
    g = 8
    hi = torch.randn(1, g * g, D).cumsum(1).mul(0.01).requires_grad_(True)
    t = dual_scale(hi)
    out = select_tokens("shirg", t, 20, None, options=ShirgOptions(merge_eps=1.0))
    assert (out.kind == KIND_MERGED).any()
    out.features.sum().backward()
    assert hi.grad is not None and (hi.grad != 0).sum() > 20
