"""Batched answers equal single ones (padding masks), for the high-resolution modes, quantized weights
and the threshold sampler; the threshold sampler through the prefix cache equals it through full
forwards; meta records the steps used."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import shirg
from shirg.model.prompt import build_prompt, tokenize_prompt
from shirg.model.sampler import generate_threshold
from shirg.model.visual import splice
from shirg.testing import write_tiny_lavida_checkpoint

IMAGES = [(1000, 1000, 0), (1000, 500, 1), (384, 384, 2), (300, 700, 3)]
QUESTIONS = ["what?", "which year has the highest total value in the table?", "name the date",
             "how many bars are there in the chart, counting from the left?"]


def noise_image(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def sharpen(model, factor: float = 8.0) -> None:
    """Scaled LLM matrices: answers then depend on image and question (else "batch == alone" is vacuous)."""
    with torch.no_grad():
        for p in model.model.transformer.parameters():
            if p.dim() == 2:
                p.mul_(factor)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_tiny_lavida_checkpoint(tmp_path_factory.mktemp("batch") / "tiny", seed=0)


@pytest.fixture(scope="module")
def sharp(ckpt):
    m = shirg.load(ckpt)
    sharpen(m)
    return m


class Spy:
    def __init__(self, fn) -> None:
        self.fn, self.outputs = fn, []

    def __call__(self, *a, **k):
        out = self.fn(*a, **k)
        self.outputs.append(out.detach().clone())
        return out


def check_batch_equals_alone(model, monkeypatch, **kw):
    images = [noise_image(*s) for s in IMAGES]
    spy = Spy(model.model.forward_cached)
    monkeypatch.setattr(model.model, "forward_cached", spy)
    batch = model.answer(images, QUESTIONS, **kw)
    first = spy.outputs[0]
    lengths = [a.meta["prompt_length"] for a in batch]
    assert len(set(lengths)) == len(lengths), "prompts must differ in length so padding is exercised"
    # the logits must depend on the prompt, or equal rows would pass trivially
    assert all((first[b] - first[0]).abs().max() > 1e-2 for b in range(1, len(batch)))
    for b, (img, q) in enumerate(zip(images, QUESTIONS, strict=True)):
        spy.outputs.clear()
        (alone,) = model.answer(img, q, **kw)
        assert alone.token_ids == batch[b].token_ids and alone.text == batch[b].text
        assert alone.meta["prompt_length"] == lengths[b]
        assert alone.meta["steps_used"] == batch[b].meta["steps_used"]
        torch.testing.assert_close(spy.outputs[0][0].float(), first[b].float(), atol=1e-4, rtol=1e-3)
    return batch


@pytest.mark.parametrize("mode", ["full", "shirg", "lavida"])
def test_high_resolution_batches_equal_single_answers(sharp, monkeypatch, mode):
    check_batch_equals_alone(sharp, monkeypatch, mode=mode, gen_length=8, steps=8, block_length=4)


def test_threshold_sampler_batches_equal_single_answers(sharp, monkeypatch):
    batch = check_batch_equals_alone(sharp, monkeypatch, mode="full", gen_length=8, block_length=4,
                                     sampler="threshold", threshold=0.5)
    for a in batch:
        assert a.meta["sampler"] == "threshold" and a.meta["threshold"] == 0.5
        assert 2 <= a.meta["steps_used"] <= 8


def test_int8_batches_equal_single_answers(ckpt, monkeypatch):
    from shirg.model.quantize import apply_weight_format

    model = shirg.load(ckpt)  # sharpened like the float model, then quantized
    sharpen(model)
    model = apply_weight_format(model, "int8")
    check_batch_equals_alone(model, monkeypatch, mode="lavida", gen_length=8, steps=8, block_length=8)


def test_threshold_sampler_leaves_the_prefix_cache_valid(sharp):
    """Denoising against one prefix cache gives the same tokens, steps and logits as rebuilding the
    cache from the prompt before every step: the steps never change it."""
    model = sharp
    images = [noise_image(*s) for s in IMAGES[:3]]
    from shirg.model.profile import Stopwatch
    from shirg.model.visual import lavida_visual

    visual = lavida_visual(model, images, "lavida", Stopwatch(model.device))
    prompt_ids = [tokenize_prompt(build_prompt(q, model.tokenizer), model.tokenizer) for q in QUESTIONS[:3]]
    embeds, key_mask = splice(model, prompt_ids, visual)
    cfg = model.config.llm
    with torch.no_grad():
        cache = model.model.prefill(embeds, key_mask)
    seen = []

    def cached(ids):
        out = model.model.forward_cached(model.model.embed(ids), cache)[..., : cfg.vocab_size]
        seen.append(out)
        return out

    def fresh(ids):
        new = model.model.prefill(embeds, key_mask)
        return model.model.forward_cached(model.model.embed(ids), new)[..., : cfg.vocab_size]

    a, used_a = generate_threshold(cached, 3, 8, 4, cfg.mask_token_id, threshold=0.3)
    calls = []
    b, used_b = generate_threshold(lambda ids: calls.append(ids.clone()) or fresh(ids), 3, 8, 4,
                                   cfg.mask_token_id, threshold=0.3)
    assert torch.equal(a, b) and torch.equal(used_a, used_b)
    assert len(calls) == len(seen) >= 2
    for ids, logits in zip(calls, seen, strict=True):
        torch.testing.assert_close(fresh(ids), logits, atol=1e-5, rtol=1e-5)


def test_fixed_sampler_records_its_steps(sharp):
    (ans,) = sharp.answer(noise_image(200, 200, 5), "what?", gen_length=8, steps=4, block_length=8)
    assert ans.meta["sampler"] == "fixed" and ans.meta["steps_used"] == 4 and "threshold" not in ans.meta
