"""Every visual mode through one model and sampler (docs/method.md section 6) on a tiny LaViDa checkpoint.

Spies wrap our own functions (pytest's monkeypatch around the real function) or hook our modules,
to count how often each stage runs and to look at what selection returned.
"""

from __future__ import annotations

import gc
import logging
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import shirg
import shirg.model.visual as visual
from shirg.errors import CheckpointError, ConfigError
from shirg.memory import rss_bytes
from shirg.model.answer import HiresFailure
from shirg.model.loading import SHIRG_WEIGHTS, load_shirg_weights, save_shirg_weights
from shirg.model.options import HIRES_MODES, MODES, VisualOptions
from shirg.model.prompt import IMAGE_TOKEN_ID, build_prompt, question_token_ids, tokenize_prompt
from shirg.testing import write_tiny_lavida_checkpoint
from shirg.tokens.types import KIND_SCAFFOLD

GEN = dict(gen_length=8, steps=4, block_length=8)
QUESTION = "what is the title of the chart?"
EXPECTED_672 = {"full": 2304, "pool": 144 + 784} | {m: 144 + 768 for m in HIRES_MODES if m not in ("full", "pool")}


def chart(w: int = 500, h: int = 300, seed: int = 0) -> Image.Image:
    """Dark bars of random widths on white, plus noise: structure for the scores to find."""
    rng = np.random.default_rng(seed)
    arr = np.full((h, w, 3), 255, dtype=np.uint8)
    for row in range(10, h - 10, 24):
        for col in range(10, w - 60, 60):
            arr[row : row + 8, col : col + int(rng.integers(10, 50))] = rng.integers(0, 120, 3)
    arr = np.clip(arr.astype(int) + rng.integers(-20, 20, arr.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


class Spy:
    """Counts calls of a real function and keeps its arguments and results."""

    def __init__(self, fn) -> None:
        self.fn, self.calls, self.args, self.outputs = fn, 0, [], []

    def __call__(self, *args, **kwargs):
        self.calls += 1
        self.args.append(args)
        out = self.fn(*args, **kwargs)
        self.outputs.append(out)
        return out


def spy(monkeypatch, owner, name: str) -> Spy:
    s = Spy(getattr(owner, name))
    monkeypatch.setattr(owner, name, s)
    return s


class Hooks:
    """Forward-call counts of some of the model's modules."""

    def __init__(self, modules: dict) -> None:
        self.calls = dict.fromkeys(modules, 0)
        self.handles = [m.register_forward_hook(self._hook(n)) for n, m in modules.items()]

    def _hook(self, name):
        def hook(module, args, output):
            self.calls[name] += 1
        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_lavida_checkpoint(tmp_path_factory.mktemp("modes") / "tiny")


@pytest.fixture(scope="module")
def model(folder):
    return shirg.load(folder)


@pytest.fixture
def hooks(model):
    core = model.model
    h = Hooks({"tower": core.vision_tower, "projector": core.mm_projector, "coords": model.shirg["coord_embed"]})
    yield h
    h.remove()


def _nonzero_coords(model, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    out = model.shirg["coord_embed"].coord_out
    with torch.no_grad():
        out.weight.copy_(torch.randn(out.weight.shape, generator=gen) * 0.5)
        out.bias.copy_(torch.randn(out.bias.shape, generator=gen) * 0.5)


# ----------------------------------------------------------------------------- every mode


def test_checkpoint_has_no_shirg_weights(folder, model):
    assert not (folder / SHIRG_WEIGHTS).exists()
    out = model.shirg["coord_embed"].coord_out
    assert not out.weight.any() and not out.bias.any()


@pytest.mark.parametrize("mode", HIRES_MODES)
def test_every_mode_runs_and_reports_its_visual_token_count(model, mode):
    """The folder has no SHIRG weights (test above): every mode still runs, with no fallback."""
    (ans,) = model.answer(chart(), QUESTION, mode=mode, **GEN)
    assert ans.meta["mode"] == ans.meta["requested_mode"] == mode
    assert "fallback" not in ans.meta
    assert ans.meta["visual_tokens"] == EXPECTED_672[mode]
    assert len(ans.token_ids) <= GEN["gen_length"]


def test_modes_cover_the_spec():
    assert set(MODES) == {"lavida", "lowres", "lavida-pad", "full", "shirg", "uniform", "pool", "random", "text-topk",
                          "saint", "tome", "visionzip", "divprune"}


@pytest.mark.parametrize(
    ("mode", "options", "tokens", "grid", "scaffold_grid"),
    [
        ("shirg", VisualOptions(scaffold=False), 768, 48, 0),
        ("uniform", VisualOptions(scaffold=False), 768, 48, 0),
        ("shirg", VisualOptions(k=300), 144 + 300, 48, 12),
        ("random", VisualOptions(k=200), 144 + 200, 48, 12),
        ("shirg", VisualOptions(resolution=504), 81 + 432, 36, 9),
        ("uniform", VisualOptions(resolution=504), 81 + 432, 36, 9),
    ],
    ids=["shirg-no-scaffold", "uniform-no-scaffold", "shirg-k300", "random-k200", "shirg-504", "uniform-504"],
)
def test_options_set_the_token_budget(model, monkeypatch, mode, options, tokens, grid, scaffold_grid):
    select = spy(monkeypatch, visual, "select_tokens")
    (ans,) = model.answer(chart(), QUESTION, mode=mode, options=options, **GEN)
    assert ans.meta["visual_tokens"] == tokens and ans.meta["mode"] == mode
    sel = select.outputs[0]
    assert sel.grid == grid and sel.scaffold_grid == scaffold_grid
    assert int((sel.kind == KIND_SCAFFOLD).sum()) == scaffold_grid**2


# ----------------------------------------------------------------------------- static selection


def test_visual_tokens_and_prefix_are_built_once_per_request(model, monkeypatch, hooks):
    """30 denoising steps: one tower pass, one selection, one coordinate embedding, one prefill, 30 cached
    forwards. The projector runs twice per request, never per step: once on all 2304 hi tokens for the
    text-relevance term (v_i = projector(H_i), docs/method.md section 2) and once on the 912 chosen tokens after
    their coordinate embedding."""
    select = spy(monkeypatch, visual, "select_tokens")
    duals = spy(monkeypatch, visual, "dual_scale")
    prefill = spy(monkeypatch, model.model, "prefill")
    cached = spy(monkeypatch, model.model, "forward_cached")
    (ans,) = model.answer(chart(), QUESTION, mode="shirg", gen_length=30, steps=30, block_length=30)
    assert ans.meta["mode"] == "shirg" and ans.meta["visual_tokens"] == 912
    assert hooks.calls == {"tower": 1, "projector": 2, "coords": 1}
    assert (select.calls, duals.calls, prefill.calls, cached.calls) == (1, 1, 1, 30)
    # the cache every step reads is the one prefill built
    assert all(args[1] is prefill.outputs[0] for args in cached.args)


def test_budget_baseline_projects_once(model, monkeypatch, hooks):
    cached = spy(monkeypatch, model.model, "forward_cached")
    model.answer(chart(), QUESTION, mode="uniform", gen_length=16, steps=16, block_length=16)
    assert hooks.calls == {"tower": 1, "projector": 1, "coords": 0}
    assert cached.calls == 16


# ----------------------------------------------------------------------------- coordinate embedding


def _visual_rows(model, question: str, visual_tokens: int) -> slice:
    ids = tokenize_prompt(build_prompt(question, model.tokenizer), model.tokenizer)
    p = ids.index(IMAGE_TOKEN_ID)
    return slice(p, p + visual_tokens)


def _run(model, monkeypatch, options: VisualOptions, image=None, question: str = QUESTION):
    """Answer in shirg mode; return (answer, prefill embeddings, first-step logits, selection)."""
    prefill = spy(monkeypatch, model.model, "prefill")
    cached = spy(monkeypatch, model.model, "forward_cached")
    select = spy(monkeypatch, visual, "select_tokens")
    (ans,) = model.answer(image or chart(), question, mode="shirg", options=options, **GEN)
    monkeypatch.undo()
    return ans, prefill.args[0][0], cached.outputs[0], select.outputs[0]


def test_zero_initialized_coordinates_change_nothing(model, monkeypatch):
    on = _run(model, monkeypatch, VisualOptions(coords=True))
    off = _run(model, monkeypatch, VisualOptions(coords=False))
    assert on[0].token_ids == off[0].token_ids and on[0].text == off[0].text
    assert torch.equal(on[1], off[1]), "prefix embeddings (visual block included) must be identical"
    assert torch.equal(on[2], off[2]), "answer-slot logits must be identical"


def test_trained_coordinates_change_the_selected_tokens_only(folder, monkeypatch):
    model = shirg.load(folder)
    before = _run(model, monkeypatch, VisualOptions())
    _nonzero_coords(model)
    after = _run(model, monkeypatch, VisualOptions())
    assert torch.equal(before[3].index, after[3].index), "coordinates are added after selection"
    rows = _visual_rows(model, QUESTION, 912)
    vis_before, vis_after = before[1][0, rows], after[1][0, rows]
    assert torch.equal(vis_before[:144], vis_after[:144]), "the scaffold gets no coordinates by default"
    assert (vis_before[144:] != vis_after[144:]).any(dim=-1).all(), "every selected token moves"
    text = torch.ones(before[1].shape[1], dtype=torch.bool)
    text[rows] = False
    assert torch.equal(before[1][0, text], after[1][0, text])
    assert not torch.equal(before[2], after[2])


def test_shirg_weights_round_trip(folder, tmp_path, monkeypatch):
    trained = shirg.load(folder)
    _nonzero_coords(trained, seed=1)
    path = save_shirg_weights(trained, tmp_path / "coords.safetensors")
    expected = _run(trained, monkeypatch, VisualOptions())

    reloaded = shirg.load(folder, shirg_weights=path)
    for k, v in trained.shirg.state_dict().items():
        assert torch.equal(reloaded.shirg.state_dict()[k], v), k
    got = _run(reloaded, monkeypatch, VisualOptions())
    assert torch.equal(got[1], expected[1]) and torch.equal(got[2], expected[2])

    # found by default when it sits in the checkpoint folder
    copy = shutil.copytree(folder, tmp_path / "with_weights")
    shutil.copy(path, copy / SHIRG_WEIGHTS)
    assert torch.equal(shirg.load(copy).shirg["coord_embed"].coord_out.weight,
                       trained.shirg["coord_embed"].coord_out.weight)


def test_bad_shirg_weights_are_named(folder, tmp_path):
    model = shirg.load(folder)
    with pytest.raises(CheckpointError, match="absent.safetensors"):
        load_shirg_weights(model, tmp_path / "absent.safetensors")
    state = {k: v.clone() for k, v in model.shirg.state_dict().items()}
    state["coord_embed.coord_out.weight"] = torch.zeros(7, 128)
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointError, match="coord_embed.coord_out.weight"):
        shirg.load(folder, shirg_weights=tmp_path / "bad.safetensors")


# ----------------------------------------------------------------------------- text relevance


def test_text_term_uses_the_question(model, monkeypatch):
    """Different questions pick different tokens with the text score, the same with saliency."""
    questions = ("what is the title of the chart?", "how many red bars are there in 2010?")
    differ = []
    for seed in range(3):
        image = chart(seed=seed)
        text = [_run(model, monkeypatch, VisualOptions(score="text", resolution=336), image, q)[3] for q in questions]
        differ.append(not torch.equal(text[0].index, text[1].index))
        if seed == 0:
            sal = [_run(model, monkeypatch, VisualOptions(score="saliency", resolution=336), image, q)[3]
                   for q in questions]
            assert torch.equal(sal[0].index, sal[1].index) and torch.equal(sal[0].kind, sal[1].kind)
    assert any(differ), "the text term ignored the question on every image"


def test_text_context_is_the_question_token_embeddings(model, monkeypatch):
    """The text term reads the LLM input embeddings of the question's own tokens (no template tokens)."""
    context = spy(monkeypatch, visual, "question_context")
    model.answer(chart(), QUESTION, mode="shirg", **GEN)
    ctx = context.outputs[0]
    ids = question_token_ids(QUESTION, model.tokenizer)
    assert ids and not set(ids) & set(model.tokenizer.all_special_ids)
    assert torch.equal(ctx.question[0], model.model.embed(torch.tensor(ids)))
    assert ctx.mask().all()


def test_shirg_batch_equals_each_alone(model, monkeypatch):
    images = [chart(500, 300, 0), chart(300, 600, 1)]
    questions = ["what?", "how many red bars are there in the table?"]
    select = spy(monkeypatch, visual, "select_tokens")
    batch = model.answer(images, questions, mode="shirg", **GEN)
    batch_sel = select.outputs[0]
    for b, (img, q) in enumerate(zip(images, questions, strict=True)):
        select.outputs.clear()
        (alone,) = model.answer(img, q, mode="shirg", **GEN)
        assert torch.equal(select.outputs[0].index[0], batch_sel.index[b])
        assert alone.token_ids == batch[b].token_ids


# ----------------------------------------------------------------------------- fallback


def test_failure_in_selection_falls_back_to_lavida_loudly(model, monkeypatch, caplog):
    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(visual, "dual_scale", out_of_memory)
    images, questions = [chart(800, 600, 0), chart(1000, 500, 1)], ["what is the title?", "how many bars?"]
    with caplog.at_level(logging.WARNING, logger="shirg.model.answer"):
        answers = model.answer(images, questions, mode="shirg", options=VisualOptions(resolution=336),
                               fallback="lavida", **GEN)
    monkeypatch.undo()
    reference = model.answer(images, questions, mode="lavida", **GEN)
    for i, (ans, ref) in enumerate(zip(answers, reference, strict=True)):
        assert ans.meta["fallback"] == "lavida" and ans.meta["mode"] == "lavida"
        assert ans.meta["requested_mode"] == "shirg"
        assert "CUDA out of memory" in ans.meta["fallback_reason"]
        assert ans.meta["visual_tokens"] == ref.meta["visual_tokens"] == (834, 602)[i]
        assert ans.token_ids == ref.token_ids
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "lavida" in r.getMessage()]
    assert len(warnings) == 2 and all("CUDA out of memory" in r.getMessage() for r in warnings)


def test_only_the_failing_sample_falls_back(model, monkeypatch, caplog):
    real = visual.dual_scale
    calls = []

    def flaky(feats, *args, **kwargs):
        calls.append(feats.shape[0])
        if feats.shape[0] > 1 or len(calls) == 3:  # the batch, then the second sample alone
            raise RuntimeError("CUDA out of memory")
        return real(feats, *args, **kwargs)

    monkeypatch.setattr(visual, "dual_scale", flaky)
    with caplog.at_level(logging.WARNING, logger="shirg.model.answer"):
        first, second = model.answer([chart(seed=0), chart(seed=1)], ["what?", "which?"], mode="shirg",
                                     options=VisualOptions(resolution=336), fallback="lavida", **GEN)
    assert calls == [2, 1, 1]
    assert first.meta["mode"] == "shirg" and "fallback" not in first.meta
    assert first.meta["visual_tokens"] == 36 + 192  # G = 24: S = 6, K = round(576 / 3)
    assert second.meta["mode"] == "lavida" and second.meta["fallback"] == "lavida"
    assert sum(r.levelno == logging.WARNING for r in caplog.records) == 1


def test_without_fallback_a_failed_hires_pass_is_a_failure_of_the_mode(model, monkeypatch):
    """Comparisons (eval, bench, lmms-eval) answer with fallback=None: a failing sample raises
    HiresFailure naming it, instead of being answered silently in another mode."""
    real = visual.dual_scale

    def flaky(feats, *args, **kwargs):
        if feats.shape[0] > 1 or flaky.calls == 2:  # the batch, then the second sample alone
            flaky.calls += 1
            raise RuntimeError("CUDA out of memory")
        flaky.calls += 1
        return real(feats, *args, **kwargs)

    flaky.calls = 0
    monkeypatch.setattr(visual, "dual_scale", flaky)
    with pytest.raises(HiresFailure) as err:
        model.answer([chart(seed=0), chart(seed=1)], ["what?", "which?"], mode="shirg",
                     options=VisualOptions(resolution=336), **GEN)
    assert err.value.mode == "shirg" and list(err.value.reasons) == [1]
    assert "CUDA out of memory" in err.value.reasons[1] and "1 sample(s)" in str(err.value)
    with pytest.raises(ConfigError, match="fallback must be"):
        model.answer(chart(seed=0), "what?", mode="shirg", options=VisualOptions(resolution=336), fallback="full")


# ----------------------------------------------------------------------------- bad options


@pytest.mark.parametrize(
    ("mode", "options", "named"),
    [
        ("nope", VisualOptions(), ["nope", "lavida", "lowres", "shirg", "divprune", "text-topk"]),
        ("shirg", VisualOptions(k=3000), ["3000", "2304"]),
        ("uniform", VisualOptions(k=2305), ["2305", "2304"]),
        ("shirg", VisualOptions(k=100), ["100", "144", "coverage"]),
        ("shirg", VisualOptions(weights=(0.7, -0.2)), ["3 values", "(0.7, -0.2, -0.1)"]),
        ("tome", VisualOptions(weights=(1.0, 0.0, 0.0, 0.0)), ["3 values"]),
        ("shirg", VisualOptions(score="clip"), ["clip", "text, saliency"]),
        ("shirg", VisualOptions(text_pool="min"), ["min", "max, mean"]),
        ("shirg", VisualOptions(sim_stride=49), ["sim stride", "49", "48"]),
        ("full", VisualOptions(resolution=500), ["500", "14"]),
    ],
    ids=["mode", "k-too-big", "k-too-big-uniform", "k-below-coverage", "weights", "weights-4", "score", "pool",
         "sim-stride", "resolution"],
)
def test_bad_options_fail_before_any_work(model, monkeypatch, hooks, mode, options, named):
    select = spy(monkeypatch, visual, "select_tokens")
    with pytest.raises(ConfigError) as err:
        model.answer(chart(), QUESTION, mode=mode, options=options, **GEN)
    for text in named:
        assert text in str(err.value)
    assert hooks.calls["tower"] == 0 and select.calls == 0


# ----------------------------------------------------------------------------- resources


def test_no_memory_growth_over_50_requests(model):
    """RSS after request 50 minus after request 10 stays under 10 MB. Each request's prefix cache alone is
    ~1 MB here (1008 visual tokens), so keeping one cache (or more) per request would grow RSS by >= 40 MB."""
    image, opts = chart(1000, 1000), VisualOptions(resolution=336)
    slack_mb, rss, cache_bytes = 10, {}, 0
    for i in range(1, 51):
        mode = "shirg" if i % 5 == 0 else "lavida"
        (ans,) = model.answer(image, QUESTION, mode=mode, options=opts, gen_length=4, steps=2, block_length=4)
        cache_bytes = max(cache_bytes, ans.meta["kv_cache_bytes"])
        if i in (10, 50):
            gc.collect()
            rss[i] = rss_bytes()
    growth_mb = (rss[50] - rss[10]) / 2**20
    print(f"RSS growth from request 10 to 50: {growth_mb:.1f} MB (prefix cache {cache_bytes / 2**20:.2f} MB)")
    assert 40 * cache_bytes / 2**20 > 2 * slack_mb, "a leaked cache per request must exceed the slack"
    assert growth_mb < slack_mb


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (the CPU test above measures RSS)")
def test_no_gpu_memory_growth_over_50_requests(folder):
    """GPU memory is released between requests: allocated bytes after request 50 equal those after 10
    (within 1 MiB), and the peak of one request is reset and reported per request."""
    model = shirg.load(folder, device="cuda")
    image, opts = chart(1000, 1000), VisualOptions(resolution=336)
    allocated = {}
    for i in range(1, 51):
        mode = "shirg" if i % 5 == 0 else "lavida"
        (ans,) = model.answer(image, QUESTION, mode=mode, options=opts, gen_length=4, steps=2, block_length=4)
        assert ans.meta["peak_gpu_mb"] > 0
        if i in (10, 50):
            torch.cuda.synchronize()
            allocated[i] = torch.cuda.memory_allocated()
    assert allocated[50] - allocated[10] < 2**20
