"""``cache="none"``: every step recomputes prompt + answer through the whole LLaDA model.

The reference below is LaViDa's uncached loop written out directly: one sequence holding the
spliced prompt embeddings followed by the answer slots, the full bidirectional model run on it
at every step (positions 0..L-1, no mask), and LLaDA's low-confidence rule over the answer part.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import shirg
from shirg.bundled import demo_sample, model_dir
from shirg.errors import ConfigError
from shirg.model.profile import Stopwatch
from shirg.model.prompt import IMAGE_TOKEN_ID, build_prompt, tokenize_prompt
from shirg.model.sampler import num_transfer_tokens, truncate_at_stop
from shirg.model.visual import lavida_visual


@pytest.fixture(scope="module")
def model():
    # the bundled small model: trained, so its answers vary by slot and image (random weights give one
    # token everywhere, which would not tell the paths apart)
    return shirg.load(model_dir())


def _image(seed: int, size=(300, 200)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def reference_uncached(model, image, question, gen_length, steps, block_length, schedule, shift):
    core, mask_id = model.model, model.config.llm.mask_token_id
    ids = tokenize_prompt(build_prompt(question, model.tokenizer), model.tokenizer)
    vis = lavida_visual(model, [image], "lavida", Stopwatch(model.device))[0]
    p = ids.index(IMAGE_TOKEN_ID)
    text = core.embed(torch.tensor([[i for i in ids if i != IMAGE_TOKEN_ID]]))
    prompt = torch.cat([text[:, :p], vis[None], text[:, p:]], dim=1)
    lp = prompt.shape[1]
    x = torch.full((1, lp + gen_length), mask_id)
    x[:, :lp] = 0
    blocks = gen_length // block_length
    for b in range(blocks):
        for n in num_transfer_tokens(block_length, steps // blocks, schedule, shift):
            e = core.embed(x)
            e[:, :lp] = prompt
            logits = core(e)[..., : model.config.llm.vocab_size]
            x0 = logits.argmax(-1)
            conf = torch.softmax(logits.double(), -1).gather(-1, x0[..., None])[..., 0]
            conf[:, lp + (b + 1) * block_length :] = -np.inf
            masked = x == mask_id
            x0 = torch.where(masked, x0, x)
            conf = torch.where(masked, conf, torch.tensor(-np.inf, dtype=conf.dtype))
            pick = conf[0].topk(n).indices
            x[0, pick] = x0[0, pick]
    return x[0, lp:].tolist()


def _stops(model):
    return {model.config.llm.eos_token_id, model.config.eot_token_id} - {None}


def test_none_equals_full_sequence_loop(model):
    schedule, shift = "shift", 0.33
    demo = demo_sample()
    images = [Image.open(demo.image).convert("RGB"), _image(1, (180, 260))]
    # questions the bundled model answers with a token in `lavida` mode (an empty answer would not tell the
    # paths apart; it gives none for the demo's reading question at this canvas)
    questions = ["How many circles are there? Answer with a number.", "What color is the square on the left side?"]
    got = model.answer(images, questions, gen_length=16, steps=8, block_length=8, cache="none",
                       predict_mask=True, schedule=schedule, shift=shift)
    for img, q, ans in zip(images, questions, got, strict=True):
        want = reference_uncached(model, img, q, 16, 8, 8, schedule, shift)
        assert ans.token_ids == truncate_at_stop(want, _stops(model)) and ans.token_ids
        assert ans.meta["cache"] == "none" and ans.meta["kv_cache_bytes"] == 0
        assert ans.meta["predict_mask"] is True and ans.meta["schedule"] == schedule


def test_none_and_prefix_logits_differ(model):
    """The two paths are different computations (the prompt sees the answer slots only in ``none``)."""
    from shirg.model.answer import full_recompute
    from shirg.model.visual import splice

    ids = tokenize_prompt(build_prompt("What is shown?", model.tokenizer), model.tokenizer)
    vis = lavida_visual(model, [_image(0)], "lavida", Stopwatch(model.device))
    embeds, key_mask = splice(model, [ids], vis)
    answer = torch.full((1, 8), model.config.llm.mask_token_id)
    answer[0, :3] = torch.tensor([5, 6, 7])
    vocab = model.config.llm.vocab_size
    full = full_recompute(model, embeds, key_mask, vocab)(answer)
    cached = model.model.forward_cached(model.model.embed(answer), model.model.prefill(embeds, key_mask))[..., :vocab]
    assert full.shape == cached.shape
    assert (full - cached).abs().max() > 1e-4


def test_prefix_is_default_and_recorded(model):
    ans = model.answer([_image(0)], ["What is shown?"], gen_length=8, steps=4, block_length=8)[0]
    assert ans.meta["cache"] == "prefix" and ans.meta["kv_cache_bytes"] > 0


def test_bad_cache(model):
    with pytest.raises(ConfigError, match="prefix, none"):
        model.answer([_image(0)], ["What is shown?"], gen_length=8, steps=4, block_length=8, cache="off")
