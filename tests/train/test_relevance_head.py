"""The learned relevance: an untrained head is exactly today's score; the distillation and box losses
are finite, reach only the head, and a few steps move the head's ranking toward the target."""

from __future__ import annotations

import json

import pytest
import torch

import shirg
from conftest import write_dense_reading_set
from shirg.errors import ConfigError
from shirg.testing import write_tiny_lavida_checkpoint
from shirg.tokens.dual_scale import dual_scale
from shirg.tokens.relevance_head import RelevanceHead, learned_scores
from shirg.tokens.scoring import pool_cells, shirg_scores, spread_cells
from shirg.train.data import Sample, TrainDataset, collate
from shirg.train.relevance import (
    RelevanceObjective,
    box_target,
    combined_loss,
    distilled_target,
    listwise_kl,
    relevance_loss,
    token_attribution,
)
from shirg.vision.preprocess import prepare_image

RES = 336


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("relevance")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ckpt = write_tiny_lavida_checkpoint(root / "ckpt")
        write_dense_reading_set(root / "eg", n=2, seed=3)
        recs = [json.loads(line) for line in (root / "eg" / "questions.jsonl").read_text().splitlines()]
        model = shirg.load(ckpt)
        model.model.requires_grad_(False)
        samples = [Sample(str(root / "eg" / r["image"]), r["question"], r["answers"][0]) for r in recs]
        ds = TrainDataset(samples, model.tokenizer, answer_length=4, eos_id=model.config.llm.eos_token_id,
                          eot_id=model.config.eot_token_id, resolutions=[RES], snap=14, seed=0)
        batch = collate([ds[(0, i)] for i in range(len(samples))])
        yield model, batch, recs
    finally:
        torch.set_num_threads(threads)


def _tokens_and_text(model, batch):
    from shirg.model.visual import question_context

    prepared = [prepare_image(img, RES, "pad") for img in batch.images]
    pixels = torch.stack([p.pixels for p in prepared])
    boxes = torch.tensor([p.content_box for p in prepared])
    with torch.no_grad():
        tokens = dual_scale(model.model.vision_tower(pixels), boxes)
    return tokens, question_context(model, batch.questions), prepared


def test_an_untrained_head_gives_exactly_todays_scores(setup):
    model, batch, _ = setup
    tokens, text, _ = _tokens_and_text(model, batch)
    head = RelevanceHead(model.config.llm.d_model)
    for source in ("text", "saliency"):
        today = shirg_scores(tokens, text, source=source)
        learned = learned_scores(tokens, text, head, source=source)
        assert torch.equal(today.score, learned.score.detach()) and torch.equal(today.sim, learned.sim.detach())
    # a head with a non-zero scale does change the text score (the test above is not vacuous)
    with torch.no_grad():
        head.scale.fill_(1.0)
    assert not torch.equal(shirg_scores(tokens, text).score, learned_scores(tokens, text, head).score.detach())


def test_listwise_kl_is_zero_at_the_target_and_positive_elsewhere():
    target = torch.tensor([[0.5, 0.25, 0.25, 0.0]])
    assert listwise_kl(torch.log(target.clamp(min=1e-12)), target).item() == pytest.approx(0.0, abs=1e-6)
    assert listwise_kl(torch.zeros(1, 4), target).item() == pytest.approx(
        sum(t * torch.log(torch.tensor(t / 0.25)).item() for t in (0.5, 0.25, 0.25)))
    mask = torch.tensor([[True, True, True, False]])
    assert torch.isfinite(listwise_kl(torch.randn(1, 4), target, mask))


def test_box_target_is_uniform_over_the_queried_patches(setup):
    _, batch, recs = setup
    contents = [prepare_image(img, RES, "pad").content_box for img in batch.images]
    t = box_target([r["boxes"] for r in recs], [img.size for img in batch.images], contents, RES // 14)
    assert t.shape == (2, 576) and torch.allclose(t.sum(1), torch.ones(2))
    x0, y0, x1, y1 = recs[0]["boxes"][0]
    inside = t[0].reshape(24, 24).nonzero()
    assert all(x0 <= (c + 0.5) * 14 <= x1 and y0 <= (r + 0.5) * 14 <= y1 for r, c in inside.tolist())


def test_distilled_target_is_a_distribution_and_trains_no_model_weight(setup):
    model, batch, _ = setup
    params = [p for p in model.parameters()]
    target = distilled_target(model, batch, RES)
    assert target.shape == (2, 576) and torch.isfinite(target).all() and (target >= 0).all()
    assert torch.allclose(target.sum(1), torch.ones(2))
    assert (target.max(1).values > 1.2 * target.min(1).values).all()  # not uniform: some tokens matter more
    assert all(p.grad is None for p in params)


def test_support_keeps_only_the_tokens_whose_removal_raises_the_loss():
    # token 0 lowers the loss (g.v = -2), token 1 raises it (g.v = +3), token 2 is inert
    grad = torch.tensor([[1.0, -1.0], [3.0, 0.0], [0.0, 5.0]])
    value = torch.tensor([[-1.0, 1.0], [1.0, 7.0], [2.0, 0.0]])
    assert torch.equal(token_attribution(grad, value, "abs"), torch.tensor([2.0, 3.0, 0.0]))
    assert torch.equal(token_attribution(grad, value, "support"), torch.tensor([2.0, 0.0, 0.0]))
    with pytest.raises(ConfigError, match="relevance attribution 'signed' is not one of abs, support"):
        token_attribution(grad, value, "signed")
    with pytest.raises(ConfigError, match="relevance attribution 'signed'"):
        RelevanceObjective("distilled", attribution="signed").validate()


def test_the_support_target_is_a_distribution_and_uniform_where_nothing_supports_the_answer(setup):
    model, batch, _ = setup
    support = distilled_target(model, batch, RES, "support")
    assert support.shape == (2, 576) and (support >= 0).all()
    assert torch.allclose(support.sum(1), torch.ones(2))
    # the untrained test model: every visual token raises its answer loss, so no row has support
    magnitude = distilled_target(model, batch, RES, "abs")
    assert (magnitude.max(1).values > 1.2 * magnitude.min(1).values).all()
    assert torch.equal(support, torch.full_like(support, 1.0 / 576))


@pytest.mark.parametrize("kind", ["distilled", "box"])
def test_the_objective_is_finite_and_reaches_only_the_head(setup, kind):
    model, batch, recs = setup
    head = RelevanceHead(model.config.llm.d_model)
    with torch.no_grad():
        head.scale.fill_(0.5)  # away from 0, so every head weight gets a gradient
    boxes = ([r["boxes"] for r in recs], [img.size for img in batch.images])
    # the answer loss of the frozen model carries no gradient; the relevance part must
    out = combined_loss(model, head, batch, "full", {}, RelevanceObjective(kind, weight=0.5), RES, boxes)
    assert torch.isfinite(out["loss"]) and out["relevance"] > 0
    out["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
               for p in head.parameters())
    assert all(p.grad is None for p in model.parameters())
    none = combined_loss(model, head, batch, "full", {}, RelevanceObjective("none"), RES)
    assert none["relevance"] == 0


def test_a_few_steps_move_the_heads_ranking_toward_the_target(setup):
    model, batch, recs = setup
    tokens, text, prepared = _tokens_and_text(model, batch)
    target = box_target([r["boxes"] for r in recs], [img.size for img in batch.images],
                        [p.content_box for p in prepared], RES // 14)

    def top_mass(score):  # share of the target's patches among the score's top-|target| tokens
        hits = []
        for s, t in zip(score, target, strict=True):
            k = int((t > 0).sum())
            hits.append(float((t[s.topk(k).indices] > 0).float().mean()))
        return sum(hits) / len(hits)

    head = RelevanceHead(model.config.llm.d_model)
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    before_kl = relevance_loss(model, head, batch, target, RES).item()
    before = top_mass(shirg_scores(tokens, text).score)
    for _ in range(40):
        opt.zero_grad()
        loss = relevance_loss(model, head, batch, target, RES)
        loss.backward()
        opt.step()
    after_kl = relevance_loss(model, head, batch, target, RES).item()
    after = top_mass(learned_scores(tokens, text, head).score.detach())
    assert after_kl < before_kl - 0.3
    assert after > before + 0.2, (before, after)


def test_the_relevance_loss_scores_with_the_runs_selection_options(setup):
    """The KL is taken over the score SHIRG selects with: the run's weights, pooling and text stride."""
    from shirg.options import ShirgOptions

    model, batch, recs = setup
    tokens, text, prepared = _tokens_and_text(model, batch)
    target = box_target([r["boxes"] for r in recs], [img.size for img in batch.images],
                        [p.content_box for p in prepared], RES // 14)
    head = RelevanceHead(model.config.llm.d_model)
    with torch.no_grad():
        head.scale.fill_(0.5)
    losses = {}
    for name, opts in {"default": ShirgOptions(), "stride": ShirgOptions(sim_stride=2),
                       "weights": ShirgOptions(weights=(1.0, 0.0, 0.0), text_pool="mean")}.items():
        with torch.no_grad():
            score = learned_scores(tokens, text, head, opts.weights, "text", opts.text_pool, opts.sim_stride).score
            losses[name] = relevance_loss(model, head, batch, target, RES, options=opts)
        torch.testing.assert_close(losses[name], listwise_kl(score, target, tokens.hi_real), atol=1e-5, rtol=1e-5)
    assert abs(losses["stride"] - losses["default"]) > 1e-3 and abs(losses["weights"] - losses["default"]) > 1e-3
    boxes = ([r["boxes"] for r in recs], [img.size for img in batch.images])
    with torch.no_grad():
        out = combined_loss(model, head, batch, "full", {"sim_stride": 2}, RelevanceObjective("box"), RES, boxes)
    torch.testing.assert_close(out["relevance"], losses["stride"], atol=1e-5, rtol=1e-5)


def test_shirg_trains_relevance_loss_takes_the_configs_selection_options(setup):
    """`shirg train`'s loss module passes data.visual's text stride to the relevance loss."""
    from shirg.options import ShirgOptions
    from shirg.train.relevance import RelevanceLossModule

    model, batch, _ = setup
    head = RelevanceHead(model.config.llm.d_model)
    with torch.no_grad():
        head.scale.fill_(0.5)
    model.relevance_head = head
    try:
        with torch.no_grad():
            target = distilled_target(model, batch, RES)
            modules = {s: RelevanceLossModule(model, "full", {"sim_stride": s}, 1e-3, RelevanceObjective("distilled"))
                       for s in (1, 2)}
            got = {s: m(batch)["relevance"] for s, m in modules.items()}
            expect = {s: relevance_loss(model, head, batch, target, RES, options=ShirgOptions(sim_stride=s))
                      for s in (1, 2)}
    finally:
        model.relevance_head = None
    for s in (1, 2):
        torch.testing.assert_close(got[s], expect[s], atol=1e-5, rtol=1e-5)
    assert abs(got[2] - got[1]) > 1e-3


def _tower_head(model, scale: float = 0.0) -> RelevanceHead:
    head = RelevanceHead(model.config.mm_hidden_size, text_dim=model.config.llm.d_model, reads="tower")
    with torch.no_grad():
        head.scale.fill_(scale)
    return head


def _never_project(text):
    """The same question context whose projector fails if called: the head source projects nothing."""
    from dataclasses import replace

    def project(_):
        raise AssertionError("the projector ran")

    return replace(text, project=project)


def test_a_tower_head_scores_saliency_plus_its_term_and_projects_nothing(setup):
    model, batch, _ = setup
    tokens, text, _ = _tokens_and_text(model, batch)
    blind = _never_project(text)
    saliency = shirg_scores(tokens, text, source="saliency")
    untrained = learned_scores(tokens, blind, _tower_head(model), source="head")
    assert torch.equal(untrained.score.detach(), saliency.score) and torch.equal(untrained.sim.detach(), saliency.sim)
    head = _tower_head(model, 0.5)
    got = learned_scores(tokens, blind, head, source="head")
    with torch.no_grad():
        delta = head(tokens.hi, text.question, text.mask())  # the tower's features, not projected ones
    torch.testing.assert_close(got.sim.detach(), saliency.sim + delta, rtol=0, atol=0)
    assert not torch.equal(got.score.detach(), saliency.score)
    # the term follows the question: the same images with the two questions swapped score differently
    swapped = _never_project(question_context_of(model, batch.questions[::-1]))
    assert not torch.equal(learned_scores(tokens, swapped, head, source="head").sim, got.sim)
    # per s x s cell with a text stride, as the text term
    cells = learned_scores(tokens, blind, head, source="head", sim_stride=2)
    with torch.no_grad():
        d2 = spread_cells(head(pool_cells(tokens.hi, tokens.grid, 2), text.question, text.mask()), tokens.grid, 2)
    torch.testing.assert_close(cells.sim.detach(), saliency.sim + d2, rtol=0, atol=0)


def question_context_of(model, questions):
    from shirg.model.visual import question_context

    return question_context(model, list(questions))


def test_the_text_free_saliency_score_ignores_a_tower_head_and_the_text_score_adds_it(setup):
    model, batch, _ = setup
    tokens, text, _ = _tokens_and_text(model, batch)
    head = _tower_head(model, 0.5)
    sal = learned_scores(tokens, _never_project(text), head, source="saliency")
    assert torch.equal(sal.score, shirg_scores(tokens, text, source="saliency").score)
    with torch.no_grad():
        txt = learned_scores(tokens, text, head, source="text")
        delta = head(tokens.hi, text.question, text.mask())
    torch.testing.assert_close(txt.sim, shirg_scores(tokens, text).sim + delta, rtol=0, atol=0)


def test_the_head_source_needs_a_tower_head(setup):
    model, batch, _ = setup
    tokens, text, _ = _tokens_and_text(model, batch)
    for head in (None, RelevanceHead(model.config.llm.d_model)):
        with pytest.raises(ConfigError, match="score source 'head' needs a relevance head that reads the tower"):
            learned_scores(tokens, text, head, source="head")
    with pytest.raises(ConfigError, match="score source 'head' needs a relevance head"):
        shirg_scores(tokens, text, source="head")
    # no question at all: saliency, as the text score falls back
    assert torch.equal(shirg_scores(tokens, None, source="head").score, shirg_scores(tokens, None).score)


def test_a_few_steps_teach_a_tower_head_the_target_through_the_head_source(setup):
    from shirg.options import ShirgOptions

    model, batch, recs = setup
    tokens, text, prepared = _tokens_and_text(model, batch)
    target = box_target([r["boxes"] for r in recs], [img.size for img in batch.images],
                        [p.content_box for p in prepared], RES // 14)
    head = _tower_head(model)
    opts = ShirgOptions(source="head")
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    before = relevance_loss(model, head, batch, target, RES, options=opts).item()
    for _ in range(40):
        opt.zero_grad()
        relevance_loss(model, head, batch, target, RES, options=opts).backward()
        opt.step()
    after = relevance_loss(model, head, batch, target, RES, options=opts).item()
    assert after < before - 0.3, (before, after)
    assert all(p.grad is None for p in model.parameters())


def test_a_mean_pooled_head_scores_the_mean_of_its_per_word_scores():
    torch.manual_seed(0)
    x, q = torch.randn(2, 5, 8), torch.randn(2, 4, 6)
    mask = torch.tensor([[True, True, False, True], [False, False, False, False]])
    head = RelevanceHead(8, 3, text_dim=6, pool="mean")
    with torch.no_grad():
        head.scale.fill_(2.0)
    a, b = x @ head.token.weight.T, q @ head.text.weight.T
    words = [0, 1, 3]  # the first row's question tokens
    want = 2.0 * torch.stack([a[0] @ b[0, j] for j in words]).mean(dim=0) / 3 ** 0.5
    got = head(x, q, mask)
    torch.testing.assert_close(got[0], want)
    assert torch.equal(got[1], torch.zeros(5))  # no question: no term
    assert torch.equal(RelevanceHead(8, 3, text_dim=6, pool="mean")(x, q, mask), torch.zeros(2, 5))  # untrained
    with pytest.raises(ConfigError, match="pools the question by one of max, mean, not 'sum'"):
        RelevanceHead(8, 3, pool="sum")


def test_only_a_mean_pooled_head_can_rank_a_conjunction_first():
    # one-hot features: token 0 is purple and a diamond, token 1 red and a diamond, token 2 purple and a
    # square; the question's words are "purple" and "diamond"; identity maps
    x = torch.tensor([[[1.0, 0, 1, 0], [0, 1, 1, 0], [1, 0, 0, 1]]])
    q = torch.tensor([[[1.0, 0, 0, 0], [0, 0, 1, 0]]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    scores = {}
    for pool in ("max", "mean"):
        head = RelevanceHead(4, 4, pool=pool)
        with torch.no_grad():
            head.token.weight.copy_(torch.eye(4))
            head.text.weight.copy_(torch.eye(4))
            head.scale.fill_(1.0)
        scores[pool] = head(x, q, mask)[0]
    assert scores["max"][0] == scores["max"][1] == scores["max"][2]  # either word: all three tie
    assert scores["mean"][0] > scores["mean"][1] and scores["mean"][0] > scores["mean"][2]
