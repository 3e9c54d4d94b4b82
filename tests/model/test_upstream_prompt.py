"""LaViDa's evaluation tokenization, checked on the tiny tokenizer with and without an added BOS.

The expected ids follow the definition: split the prompt text at "<image>", tokenize each piece
with the tokenizer's special tokens (``tokenizer(piece).input_ids``), and if the first piece starts
with the BOS id keep it once, put one image id between pieces and drop the first id of each piece.
"""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from shirg.errors import ConfigError
from shirg.model.prompt import IMAGE_TOKEN_ID, build_prompt, tokenize_prompt
from shirg.model.upstream_prompt import added_special_ids, lavida_eval_ids, lavida_eval_text, prompt_ids_for_style
from shirg.testing import build_tiny_tokenizer

QUESTION = "What is the value of the highest bar?"


def _expected(prompt: str, tok) -> list[int]:
    pieces = [tok(c).input_ids for c in prompt.split("<image>")]
    if pieces[0] and pieces[0][0] == tok.bos_token_id:
        return [pieces[0][0], *pieces[0][1:], IMAGE_TOKEN_ID, *pieces[1][1:]]
    return [*pieces[0], IMAGE_TOKEN_ID, *pieces[1]]


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    plain = build_tiny_tokenizer(root / "plain")
    bos = build_tiny_tokenizer(root / "bos")
    data = json.loads((bos / "tokenizer.json").read_text())
    bos_id = data["added_tokens"][[t["content"] for t in data["added_tokens"]].index("<|begin_of_text|>")]["id"]
    bos_tok, a, b = ({"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}})
    data["post_processor"] = {
        "type": "TemplateProcessing", "single": [bos_tok, a], "pair": [bos_tok, a, b],
        "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [bos_id],
                                                 "tokens": ["<|begin_of_text|>"]}},
    }
    (bos / "tokenizer.json").write_text(json.dumps(data))
    load = lambda f: AutoTokenizer.from_pretrained(str(f), local_files_only=True)  # noqa: E731
    return load(plain), load(bos)


def test_no_bos_tokenizer_drops_the_newline_after_the_image(tokenizers):
    tok = tokenizers[0]
    assert added_special_ids(tok) == ([], [])
    prompt = build_prompt(QUESTION, tok)
    ours = tokenize_prompt(prompt, tok)
    got = lavida_eval_ids(ours, tok)
    assert got == _expected(prompt, tok)
    p = ours.index(IMAGE_TOKEN_ID)
    assert tok.decode([ours[p + 1]]).startswith("\n")
    assert got == ours[: p + 1] + ours[p + 2 :]  # exactly one token (the "\n") gone
    assert got.count(tok.bos_token_id) == 1


def test_bos_tokenizer_gives_a_double_bos(tokenizers):
    tok = tokenizers[1]
    assert added_special_ids(tok) == ([tok.bos_token_id], [])
    prompt = build_prompt(QUESTION, tok)
    ours = tokenize_prompt(prompt, tok)
    got = lavida_eval_ids(ours, tok)
    assert got == _expected(prompt, tok)
    assert got[:2] == [tok.bos_token_id, tok.bos_token_id]
    assert got == [tok.bos_token_id, *ours]  # the "\n" stays


def test_styles(tokenizers):
    tok = tokenizers[0]
    ids = tokenize_prompt(build_prompt(QUESTION, tok), tok)
    assert prompt_ids_for_style(ids, tok, "shirg") == ids
    assert prompt_ids_for_style(ids, tok, "lavida-eval") == lavida_eval_ids(ids, tok)
    with pytest.raises(ConfigError, match="shirg, lavida-eval"):
        prompt_ids_for_style(ids, tok, "llava")


def test_lavida_eval_decoding_keeps_text_after_eos(tokenizers):
    tok = tokenizers[0]
    word = tok(" red", add_special_tokens=False)["input_ids"]
    bang = tok("!", add_special_tokens=False)["input_ids"]
    eos = tok.eos_token_id
    mask = tok.convert_tokens_to_ids("<|mdm_mask|>")
    ids = bang + word + [eos, mask] + word + [eos, eos]
    assert lavida_eval_text(ids, tok) == "red red"


def test_answer_records_and_applies_styles():
    import shirg
    from shirg.bundled import demo_sample, model_dir

    model, demo = shirg.load(model_dir()), demo_sample()
    kw = dict(mode="lowres", gen_length=8, steps=4, block_length=8)
    ours = model.answer([demo.image], [demo.question], **kw)[0]
    theirs = model.answer([demo.image], [demo.question], prompt_style="lavida-eval", decode="lavida-eval", **kw)[0]
    assert theirs.meta["prompt_length"] == ours.meta["prompt_length"] - 1
    assert (ours.meta["prompt_style"], theirs.meta["prompt_style"]) == ("shirg", "lavida-eval")
    assert theirs.meta["decode"] == "lavida-eval" and len(theirs.token_ids) == 8
    with pytest.raises(ConfigError, match="prompt style"):
        model.answer([demo.image], [demo.question], prompt_style="llava", **kw)
