"""``--recipe lavida-paper``: LaViDa's published evaluation settings, and token-for-token agreement
with LaViDa's uncached evaluation loop written out here from its definitions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from shirg.cli import main
from shirg.errors import ConfigError
from shirg.evaluate.data import task_spec
from shirg.evaluate.recipes import RECIPES, SOURCES, recipe_settings
from shirg.model.profile import Stopwatch
from shirg.model.prompt import IMAGE_TOKEN_ID, build_prompt
from shirg.model.visual import lavida_visual
from shirg.testing import tiny_lavida_config, write_tiny_lavida_checkpoint

POST_WORD_OR_PHRASE = "\nAnswer the question using a single word or phrase."


def test_settings_follow_the_definitions():
    for task, length in (("chartqa", 16), ("docvqa", 32), ("textvqa", 256)):
        s = recipe_settings("lavida-paper", task)
        block = min(128, length)  # llava_llada: block_length = min(128, max_new_tokens)
        assert (s["gen_length"], s["block_length"]) == (length, block)
        # step_per_block = block_length: one token per step
        assert s["steps"] // (length // block) == block and s["schedule"] == "uniform"
        assert s["cache"] == "none" and s["predict_mask"] and s["temperature"] == 0
        assert (s["prompt_style"], s["decode"], s["pool"]) == ("lavida-eval", "lavida-eval", "on")
    assert set(SOURCES) >= set(recipe_settings("lavida-paper", "chartqa"))
    assert set(RECIPES["lavida-paper"]) == {"chartqa", "docvqa", "textvqa"}
    with pytest.raises(ConfigError, match="chartqa, docvqa, textvqa"):
        recipe_settings("lavida-paper", "entitygrid")
    with pytest.raises(ConfigError, match="lavida-paper"):
        recipe_settings("llava", "chartqa")


def test_task_prompts_as_lmms_eval():
    # textvqa_doc_to_text: pre_prompt + question.capitalize() + post_prompt
    assert task_spec("textvqa").prompt("what brand is the CAN?") == "What brand is the can?" + POST_WORD_OR_PHRASE
    assert task_spec("docvqa").prompt("what is the DATE?") == "what is the DATE?" + POST_WORD_OR_PHRASE
    assert task_spec("chartqa").prompt("Max?") == "Max?\nAnswer the question with a single word."
    assert task_spec("chartqa").prompt("Max?", "") == "Max?"


# What lmms-eval 0.3.0 (the release LaViDa's eval folder bundles) asks of the model per task: the yaml's
# max_new_tokens (TextVQA's yaml sets none, so llava_llada's default 256) and the text doc_to_text builds
# (pre_prompt "" + question + post_prompt; TextVQA capitalizes the question).
UPSTREAM_TASKS = {
    "chartqa": (16, lambda q: q + "\nAnswer the question with a single word."),
    "docvqa": (32, lambda q: q + POST_WORD_OR_PHRASE),
    "textvqa": (256, lambda q: q.capitalize() + POST_WORD_OR_PHRASE),
}


def _upstream_answer(model, image, text, max_new_tokens) -> tuple[list[int], str]:
    """LaViDa's eval for one sample: llava_llada's block_length = min(128, max_new_tokens) and
    step_per_block = block_length, generate.py's uncached loop (every step recomputes prompt and answer),
    get_num_transfer_tokens' uniform counts, argmax over the whole vocabulary (mask id included), float64
    confidence, then batch_decode with special tokens skipped, lstrip("!"), strip(). Prompt ids by
    tokenizer_image_token's rule."""
    tok, core, mask_id = model.tokenizer, model.model, model.config.llm.mask_token_id
    prompt = build_prompt(text, tok)
    pieces = [tok(c).input_ids for c in prompt.split("<image>")]
    offset = 1 if pieces[0][0] == tok.bos_token_id else 0
    ids = pieces[0][:offset]
    for part in (pieces[0], [IMAGE_TOKEN_ID] * (offset + 1), pieces[1]):
        ids += part[offset:]
    vis = lavida_visual(model, [image], "lowres", Stopwatch(model.device), pool=True)[0]
    p = ids.index(IMAGE_TOKEN_ID)
    emb = core.embed(torch.tensor([[i for i in ids if i != IMAGE_TOKEN_ID]]))
    prompt_emb = torch.cat([emb[:, :p], vis[None], emb[:, p:]], dim=1)
    length = max_new_tokens
    block = min(128, length)
    per_block = block  # step_per_block defaults to block_length (generate.py runs min(step_per_block, block))
    lp = prompt_emb.shape[1]
    x = torch.full((1, lp + length), mask_id)
    x[:, :lp] = 0
    forwards = 0
    for b in range(length // block):
        base, extra = divmod(block, per_block)
        for i in range(per_block):
            n = base + (i < extra)
            e = core.embed(x)
            e[:, :lp] = prompt_emb
            logits = core(e)[..., : model.config.llm.vocab_size]
            forwards += 1
            x0 = logits.argmax(-1)
            conf = torch.softmax(logits.double(), -1).gather(-1, x0[..., None])[..., 0]
            conf[:, lp + (b + 1) * block :] = -np.inf
            masked = x == mask_id
            x0 = torch.where(masked, x0, x)
            conf = torch.where(masked, conf, torch.tensor(-np.inf, dtype=conf.dtype))
            pick = conf[0].topk(n).indices
            x[0, pick] = x0[0, pick]
    assert forwards == length  # one token per step
    answer = x[0, lp:].tolist()
    return answer, tok.decode(x[0].tolist(), skip_special_tokens=True).lstrip("!").strip()


def _write_task(task, data, image, questions):
    """``questions`` about ``image`` in the task's release layout; returns the image file the loader reads."""
    if task == "chartqa":
        f = data / "test" / "png" / "a.png"
        f.parent.mkdir(parents=True)
        (data / "test" / "test_human.json").write_text(json.dumps(
            [{"imgname": "a.png", "query": q, "label": "6"} for q in questions]))
        (data / "test" / "test_augmented.json").write_text("[]")
    elif task == "docvqa":
        f = data / "val" / "documents" / "a.png"
        f.parent.mkdir(parents=True)
        (data / "val" / "val_v1.0.json").write_text(json.dumps({"data": [
            {"questionId": i, "question": q, "image": "documents/a.png", "answers": ["6"]}
            for i, q in enumerate(questions)]}))
    else:
        f = data / "train_images" / "a.jpg"
        f.parent.mkdir(parents=True)
        (data / "TextVQA_0.5.1_val.json").write_text(json.dumps({"data": [
            {"question_id": i, "image_id": "a", "question": q, "answers": ["6"] * 10}
            for i, q in enumerate(questions)]}))
    image.save(f)
    return f


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A random checkpoint in LaViDa's layout, small enough for TextVQA's 256 full-recompute steps.

    Fan-in linear weights and a short RoPE wavelength (theta 100) make each slot's prediction depend on
    its position and on the slots already filled, so the filling order shows in the answer; the mask
    id's output row is negated, which makes the mask the top prediction at some steps (where
    predicting it is what the recipe's predict_mask decides). With the default tiny weights every
    slot of an answer gets the same token, whatever the order."""
    folder = write_tiny_lavida_checkpoint(tmp_path_factory.mktemp("recipe") / "tiny", shards=1,
                                          config=tiny_lavida_config(rope_theta=100.0), linear_init="fan_in")
    weights = load_file(folder / "model.safetensors")
    weights["model.transformer.ff_out.weight"][tiny_lavida_config()["mask_token_id"]] *= -1
    save_file(weights, folder / "model.safetensors")
    return folder


# TextVQA's 256 slots on the tiny weights; ChartQA and DocVQA on the bundled small model, whose answers
# are words that change with the prompt ids and the pooling (at 16 or 32 slots the tiny weights give one
# token in every slot, whatever the order)
CASES = [("tiny", "textvqa"), ("bundled", "chartqa"), ("bundled", "docvqa")]


@pytest.mark.parametrize(("weights", "task"), CASES)
def test_eval_recipe_matches_upstream_loop(tmp_path, request, weights, task):
    import shirg
    from shirg.bundled import demo_sample, model_dir

    folder = request.getfixturevalue("tiny_model") if weights == "tiny" else model_dir()
    demo = demo_sample()
    questions = ["what number is on the RED circle?", demo.question]
    image_file = _write_task(task, tmp_path / "data", Image.open(demo.image).convert("RGB"), questions)
    out = tmp_path / "out"
    assert main(["eval", "--model", str(folder), "--task", task, "--data", str(tmp_path / "data"), "--modes",
                 "lowres", "--recipe", "lavida-paper", "--out", str(out), "--warmup", "0", "--overlays", "0",
                 "--no-progress"]) == 0
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    run = json.loads((out / "run.json").read_text())
    s = recipe_settings("lavida-paper", task)
    assert {k: run["settings"]["gen"][k] for k in s} == s
    model = shirg.load(folder)
    image = Image.open(image_file).convert("RGB")
    max_new_tokens, doc_to_text = UPSTREAM_TASKS[task]
    upstream = [_upstream_answer(model, image, doc_to_text(q), max_new_tokens) for q in questions]
    assert [rec["cache"] for rec in records] == ["none"] * len(questions)
    assert [rec["prediction"] for rec in records] == [text for _, text in upstream]
    assert any(text for _, text in upstream)  # the comparison is not between empty answers
    # every answer slot, special tokens and masks included (the decoded text drops them)
    ours = model.answer([image], [doc_to_text(questions[0])], mode="lowres", **s)[0]
    assert ours.token_ids == upstream[0][0]
