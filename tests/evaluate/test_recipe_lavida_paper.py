"""``--recipe lavida-paper``: LaViDa's published evaluation settings, and token-for-token agreement
with LaViDa's uncached evaluation loop written out here from its definitions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from shirg.cli import main
from shirg.errors import ConfigError
from shirg.evaluate.data import task_spec
from shirg.evaluate.recipes import RECIPES, SOURCES, recipe_settings
from shirg.model.profile import Stopwatch
from shirg.model.prompt import IMAGE_TOKEN_ID, build_prompt
from shirg.model.visual import lavida_visual

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


def _upstream_answer(model, image, text, s):
    """LaViDa's eval for one sample: tokenizer_image_token ids, full-sequence steps, uniform counts,
    argmax over the whole vocabulary, float64 confidence, decode with special tokens skipped."""
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
    lp, length, block = prompt_emb.shape[1], s["gen_length"], s["block_length"]
    x = torch.full((1, lp + length), mask_id)
    x[:, :lp] = 0
    blocks, per_block = length // block, s["steps"] // (length // block)
    for b in range(blocks):
        base, extra = divmod(block, per_block)
        for i in range(per_block):
            n = base + (i < extra)
            e = core.embed(x)
            e[:, :lp] = prompt_emb
            logits = core(e)[..., : model.config.llm.vocab_size]
            x0 = logits.argmax(-1)
            conf = torch.softmax(logits.double(), -1).gather(-1, x0[..., None])[..., 0]
            conf[:, lp + (b + 1) * block :] = -np.inf
            masked = x == mask_id
            x0 = torch.where(masked, x0, x)
            conf = torch.where(masked, conf, torch.tensor(-np.inf, dtype=conf.dtype))
            pick = conf[0].topk(n).indices
            x[0, pick] = x0[0, pick]
    return tok.decode(x[0].tolist(), skip_special_tokens=True).lstrip("!").strip()


@pytest.mark.parametrize("task", ["chartqa", "docvqa"])
def test_eval_recipe_matches_upstream_loop(tmp_path, task):
    import shirg
    from shirg.bundled import demo_sample, model_dir

    demo = demo_sample()
    image = Image.open(demo.image).convert("RGB")
    data = tmp_path / "data"
    questions = [demo.question, "what number is on the RED circle?"]
    if task == "chartqa":
        (data / "test" / "png").mkdir(parents=True)
        image.save(data / "test" / "png" / "a.png")
        (data / "test" / "test_human.json").write_text(json.dumps(
            [{"imgname": "a.png", "query": q, "label": "6"} for q in questions]))
        (data / "test" / "test_augmented.json").write_text("[]")
    else:
        (data / "val" / "documents").mkdir(parents=True)
        image.save(data / "val" / "documents" / "a.png")
        (data / "val" / "val_v1.0.json").write_text(json.dumps({"data": [
            {"questionId": i, "question": q, "image": "documents/a.png", "answers": ["6"]}
            for i, q in enumerate(questions)]}))
    out = tmp_path / "out"
    assert main(["eval", "--model", str(model_dir()), "--task", task, "--data", str(data), "--modes", "lowres",
                 "--recipe", "lavida-paper", "--out", str(out), "--warmup", "0", "--overlays", "0",
                 "--no-progress"]) == 0
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    run = json.loads((out / "run.json").read_text())
    s = recipe_settings("lavida-paper", task)
    assert {k: run["settings"]["gen"][k] for k in s} == s
    model = shirg.load(model_dir())
    for rec, q in zip(records, questions, strict=True):
        assert rec["cache"] == "none"
        assert rec["prediction"] == _upstream_answer(model, image, task_spec(task).prompt(q), s)
    assert any(rec["prediction"] for rec in records)  # the comparison is not between empty answers
