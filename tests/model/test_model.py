"""LaViDa model stack on tiny checkpoints in LaViDa's real layout: loading, visual layout, answer().

The LLaDA core and the sampler have their own tests (test_llada.py, test_sampler.py); these check
what sits around them: checkpoint loading and its errors, LaViDa's visual block, splicing, batching,
input errors and that ``steps`` is honoured.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import shirg
from shirg.errors import CheckpointError, ConfigError, ImageError
from shirg.model.anyres import anyres_views, pool_view_tokens, unpad_merge
from shirg.model.prompt import IMAGE_TOKEN_ID, build_prompt, tokenize_prompt
from shirg.model.sampler import generate, truncate_at_stop
from shirg.testing import tiny_lavida_config, write_tiny_lavida_checkpoint
from shirg.vision.preprocess import to_tensor

GEN = dict(gen_length=8, steps=4, block_length=8)
SHARPEN = 8.0  # see sharpen()


def sharpen(model, factor: float = SHARPEN) -> None:
    """Scale the LLM's matrices: N(0, 0.02) weights make a near-constant LM whose greedy answer ignores
    the prompt, which would make "batch == alone" vacuous. Scaled, answers depend on image and question."""
    with torch.no_grad():
        for p in model.model.transformer.parameters():
            if p.dim() == 2:
                p.mul_(factor)


def noise_image(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


class Counter:
    """Counts calls of a real function or module forward (pytest's monkeypatch restores it)."""

    def __init__(self, fn=None) -> None:
        self.fn, self.calls, self.outputs = fn, 0, []

    def __call__(self, *args, **kwargs):
        self.calls += 1
        out = self.fn(*args, **kwargs)
        self.outputs.append(out)
        return out

    def hook(self, module, args, output) -> None:
        self.calls += 1


def spy(monkeypatch, owner, name: str) -> Counter:
    counter = Counter(getattr(owner, name))
    monkeypatch.setattr(owner, name, counter)
    return counter


def count_tower(model) -> tuple[Counter, torch.utils.hooks.RemovableHandle]:
    counter = Counter()
    return counter, model.model.vision_tower.register_forward_hook(counter.hook)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    return {
        "sharded": write_tiny_lavida_checkpoint(root / "sharded", seed=0, shards=3),
        "single": write_tiny_lavida_checkpoint(root / "single", seed=0, shards=1),
    }


@pytest.fixture(scope="module")
def model(folders):
    return shirg.load(folders["sharded"])


@pytest.fixture(scope="module")
def sharp(folders):
    m = shirg.load(folders["sharded"])
    sharpen(m)
    return m


# ----------------------------------------------------------------------------- loading


def test_single_file_and_sharded_checkpoints_give_identical_logits(folders):
    assert (folders["sharded"] / "model.safetensors.index.json").is_file()
    assert len(list(folders["sharded"].glob("model-*-of-00003.safetensors"))) == 3
    assert (folders["single"] / "model.safetensors").is_file()
    a, b = shirg.load(folders["sharded"]), shirg.load(folders["single"])
    # SHIRG's coordinate embedding is not in the checkpoint: its fresh init must be the same on every load
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    embeds = torch.randn(2, 12, a.config.llm.d_model, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        la, lb = a.model(embeds), b.model(embeds)
    assert la.shape == (2, 12, a.config.llm.embedding_size)
    assert torch.equal(la, lb)
    image = noise_image(500, 300)
    assert a.answer(image, "what is the title?", **GEN)[0].token_ids == b.answer(image, "what is the title?",
                                                                                 **GEN)[0].token_ids


def _copy_with_tensors(src, dst, edit):
    """Copy a single-file checkpoint folder, rewriting its tensors with ``edit(dict)``."""
    shutil.copytree(src, dst)
    tensors = load_file(str(src / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def _rename(old: str, new: str):
    def edit(t):
        t[new] = t.pop(old)
    return edit


def _reshape(name: str):
    def edit(t):
        t[name] = torch.zeros(t[name].shape[0], t[name].shape[1] // 2)
    return edit


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (lambda t: t.pop("model.image_newline"), ["missing", "model.image_newline"]),
        (_rename("model.mm_projector.0.weight", "model.mm_projector.1.weight"),
         ["missing", "model.mm_projector.0.weight", "unexpected", "model.mm_projector.1.weight"]),
        (_reshape("model.transformer.blocks.1.q_proj.weight"),
         ["wrong shape", "model.transformer.blocks.1.q_proj.weight", "(64, 32)", "(64, 64)"]),
        (lambda t: t.__setitem__("model.extra_head.weight", torch.zeros(2, 2)),
         ["unexpected", "model.extra_head.weight"]),
        (lambda t: t.pop("model.vision_tower.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight"),
         ["missing", "vision_model.encoder.layers.0.mlp.fc1.weight"]),
    ],
    ids=["missing-key", "renamed-key", "wrong-shape", "unexpected-key", "missing-vision-key"],
)
def test_bad_tensors_raise_checkpoint_error_naming_them(folders, tmp_path, edit, named):
    folder = _copy_with_tensors(folders["single"], tmp_path / "bad", edit)
    with pytest.raises(CheckpointError) as err:
        shirg.load(folder)
    for text in named:
        assert text in str(err.value)


def test_missing_shard_file_is_named(folders, tmp_path):
    folder = shutil.copytree(folders["sharded"], tmp_path / "bad")
    (folder / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model-00002-of-00003.safetensors"):
        shirg.load(folder)


def test_missing_tokenizer_is_a_checkpoint_error(folders, tmp_path):
    folder = shutil.copytree(folders["single"], tmp_path / "bad")
    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer_config.json").unlink()
    with pytest.raises(CheckpointError, match="tokenizer"):
        shirg.load(folder)


def test_missing_folder_and_config_are_named(folders, tmp_path):
    with pytest.raises(CheckpointError, match="nowhere"):
        shirg.load(tmp_path / "nowhere")
    folder = shutil.copytree(folders["single"], tmp_path / "noconfig")
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json"):
        shirg.load(folder)


def test_loading_leaves_the_global_random_state_alone(folders):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    shirg.load(folders["single"])
    assert torch.equal(torch.rand(3), expected)


def test_bf16_load_on_cpu_answers_with_the_same_token_counts(folders, model):
    m16 = shirg.load(folders["sharded"], dtype="bf16")
    assert m16.dtype == torch.bfloat16
    floats = [p for p in m16.parameters() if p.is_floating_point()]
    assert floats and all(p.dtype == torch.bfloat16 and p.device.type == "cpu" for p in floats)
    images = [noise_image(800, 600), noise_image(384, 384, seed=1)]
    questions = ["what is the title?", "how many bars are red?"]
    a16 = m16.answer(images, questions, mode="lavida", **GEN)
    a32 = model.answer(images, questions, mode="lavida", **GEN)
    for x, y in zip(a16, a32, strict=True):
        for key in ("visual_tokens", "prompt_length", "gen_length", "steps"):
            assert x.meta[key] == y.meta[key], key
        assert len(x.token_ids) <= GEN["gen_length"]
    (hires,) = m16.answer(images[0], questions[0], mode="shirg", **GEN)
    assert hires.meta["mode"] == "shirg" and "fallback" not in hires.meta and hires.meta["visual_tokens"] == 912


# ----------------------------------------------------------------------------- visual layout


def test_lavida_visual_token_counts_follow_lavida_rules(model):
    sizes = [(1000, 1000), (800, 600), (1000, 500), (384, 384)]
    images = [noise_image(w, h, seed=i) for i, (w, h) in enumerate(sizes)]
    questions = ["what is shown?"] * len(images)
    lavida = model.answer(images, questions, mode="lavida", **GEN)
    assert [a.meta["visual_tokens"] for a in lavida] == [1008, 834, 602, 406]
    lowres = model.answer(images, questions, mode="lowres", **GEN)
    assert [a.meta["visual_tokens"] for a in lowres] == [197] * 4
    # same question: the prompts differ by their visual blocks only
    text = {a.meta["prompt_length"] - a.meta["visual_tokens"] for a in lavida + lowres}
    assert len(text) == 1
    assert all(a.meta["mode"] == m for m, batch in (("lavida", lavida), ("lowres", lowres)) for a in batch)


def test_checkpoint_without_pooling_keeps_27x27_views(tmp_path):
    """Low-res / stage-1 checkpoints (no ``mm_spatial_pool_mode``) skip the bilinear 27 -> 14 pooling."""
    folder = write_tiny_lavida_checkpoint(tmp_path / "nopool", tiny_lavida_config(mm_spatial_pool_mode=None))
    m = shirg.load(folder)
    assert not m.config.pool_views
    images = [noise_image(1000, 1000), noise_image(800, 600, seed=1)]
    lavida = m.answer(images, ["what?", "what?"], mode="lavida", **GEN)
    # base 27 x 27, then a 2 x 2 tile grid of 54 x 54 (800x600 keeps int(600 * 54 / 800) = 40 rows) + newlines
    assert [a.meta["visual_tokens"] for a in lavida] == [729 + 54 * 55, 729 + 40 * 55]
    lowres = m.answer(images, ["what?", "what?"], mode="lowres", **GEN)
    assert [a.meta["visual_tokens"] for a in lowres] == [730, 730]


@torch.no_grad()
def test_lavida_mode_is_bit_identical_to_the_model_stack_path(model, monkeypatch):
    """LaViDa's block built by hand from the primitives, spliced at the placeholder, prefilled once and
    run on an all-mask answer, gives the very logits (and answer) that answer(mode="lavida") uses."""
    core, cfg, tok = model.model, model.config, model.tokenizer
    image, question = noise_image(800, 600, seed=3), "what is the highest value in the chart?"

    views, grid = anyres_views(image, cfg.pinpoints, 384)
    assert grid == (2, 2) and len(views) == 5
    feats = core.vision_tower(torch.stack([to_tensor(v) for v in views]))
    x = pool_view_tokens(core.mm_projector(feats))
    block = unpad_merge(x[0], x[1:].reshape(len(views) - 1, 14, 14, -1), grid, image.size, core.image_newline)
    assert block.shape[0] == 834
    ids = tokenize_prompt(build_prompt(question, tok), tok)
    p = ids.index(IMAGE_TOKEN_ID)
    embeds = torch.cat([core.embed(torch.tensor(ids[:p])), block, core.embed(torch.tensor(ids[p + 1 :]))])[None]
    cache = core.prefill(embeds, torch.ones(embeds.shape[:2], dtype=torch.bool))
    vocab, mask_id = cfg.llm.vocab_size, cfg.llm.mask_token_id

    def logits_fn(answer_ids):
        return core.forward_cached(core.embed(answer_ids), cache)[..., :vocab]

    first = logits_fn(torch.full((1, GEN["gen_length"]), mask_id))
    expected = generate(logits_fn, 1, GEN["gen_length"], GEN["steps"], GEN["block_length"], mask_id)

    calls = spy(monkeypatch, core, "forward_cached")
    prefills = spy(monkeypatch, core, "prefill")
    (ans,) = model.answer(image, question, mode="lavida", **GEN)
    assert prefills.calls == 1 and torch.equal(prefills.outputs[0].key_mask, cache.key_mask)
    for i in range(len(cache)):
        assert all(torch.equal(a, b) for a, b in zip(prefills.outputs[0].layer(i), cache.layer(i), strict=True))
    assert torch.equal(calls.outputs[0][..., :vocab], first)
    stops = {cfg.llm.eos_token_id, cfg.eot_token_id}
    assert ans.token_ids == truncate_at_stop(expected[0].tolist(), stops)
    assert ans.meta["visual_tokens"] == 834 and ans.meta["prompt_length"] == embeds.shape[1]


# ----------------------------------------------------------------------------- batching


@pytest.mark.parametrize("mode", ["lavida", "lowres"])
def test_batch_of_different_lengths_equals_each_alone(sharp, monkeypatch, mode):
    images = [noise_image(1000, 1000, 0), noise_image(1000, 500, 1), noise_image(384, 384, 2)]
    questions = ["what?", "which year has the highest total value in the table?", "name the date"]
    kw = dict(mode=mode, gen_length=8, steps=8, block_length=4)
    calls = spy(monkeypatch, sharp.model, "forward_cached")
    batch = sharp.answer(images, questions, **kw)
    batch_logits = calls.outputs[0]
    lengths = [a.meta["prompt_length"] for a in batch]
    assert len(set(lengths)) == 3, "prompts must differ in length so padding is exercised"
    assert len({tuple(a.token_ids) for a in batch}) > 1, "answers must depend on the prompt"
    for b, (img, q) in enumerate(zip(images, questions, strict=True)):
        calls.outputs.clear()
        (alone,) = sharp.answer(img, q, **kw)
        assert alone.token_ids == batch[b].token_ids and alone.text == batch[b].text
        assert alone.meta["prompt_length"] == lengths[b]
        torch.testing.assert_close(calls.outputs[0][0], batch_logits[b], atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------------------- bad input


def test_unreadable_image_is_an_image_error(model, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a PNG")
    with pytest.raises(ImageError, match="broken.png"):
        model.answer(broken, "what is shown?", mode="lowres", **GEN)
    with pytest.raises(ImageError, match="absent.png"):
        model.answer(tmp_path / "absent.png", "what is shown?", mode="lowres", **GEN)


def test_question_too_long_for_the_context_is_a_config_error(model, tmp_path):
    image = noise_image(300, 300)
    (short,) = model.answer(image, "what?", mode="lowres", **GEN)
    limit = short.meta["prompt_length"] + GEN["gen_length"] + 4
    folder = write_tiny_lavida_checkpoint(tmp_path / "short", tiny_lavida_config(max_sequence_length=limit))
    assert json.loads((folder / "config.json").read_text())["max_sequence_length"] == limit
    small = shirg.load(folder)
    assert small.answer(image, "what?", mode="lowres", **GEN)[0].meta["prompt_length"] == limit - 12
    with pytest.raises(ConfigError, match=f"context of {limit}"):
        small.answer(image, "what is the total value of the red bars in the chart?", mode="lowres", **GEN)
    with pytest.raises(ConfigError, match="gen_length"):
        small.answer(image, "what?", mode="lowres", gen_length=16, steps=4, block_length=16)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(questions="what?", gen_length=10, steps=5, block_length=4), "multiple of block_length"),
        (dict(questions="", **GEN), "question is empty"),
        (dict(questions="   ", **GEN), "question is empty"),
        (dict(questions="what?", schedule="cosine", **GEN), "uniform, shift"),
    ],
    ids=["gen-not-multiple-of-block", "empty-question", "blank-question", "unknown-schedule"],
)
def test_bad_arguments_are_config_errors_before_any_work(model, kwargs, match):
    counter, handle = count_tower(model)
    try:
        with pytest.raises(ConfigError, match=match):
            model.answer(noise_image(300, 300), mode="lowres", **kwargs)
    finally:
        handle.remove()
    assert counter.calls == 0


# ----------------------------------------------------------------------------- steps and metadata


@pytest.mark.parametrize(("steps", "block_length"), [(2, 8), (4, 4), (8, 8), (8, 4)])
def test_steps_are_respected(model, monkeypatch, steps, block_length):
    calls = spy(monkeypatch, model.model, "forward_cached")
    (ans,) = model.answer(noise_image(300, 200), "what?", mode="lowres", gen_length=8, steps=steps,
                          block_length=block_length)
    assert calls.calls == steps
    assert ans.meta["steps"] == steps


def test_meta_reports_tokens_stages_and_memory(model):
    (ans,) = model.answer(noise_image(640, 480), "what is the title?", mode="lavida", **GEN)
    meta = ans.meta
    assert meta["mode"] == meta["requested_mode"] == "lavida" and "fallback" not in meta
    assert meta["visual_tokens"] > 0 and meta["prompt_length"] > meta["visual_tokens"]
    assert {"preprocess", "vision", "prefill", "denoise", "total"} <= set(meta["time_s"])
    assert all(t >= 0 for t in meta["time_s"].values())
    assert meta["rss_mb"] > 0 and meta["kv_cache_bytes"] > 0
    json.dumps(ans.to_dict())  # the CLI writes it as JSON
