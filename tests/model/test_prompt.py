import pytest
from transformers import AutoTokenizer

from shirg.errors import ConfigError
from shirg.model.prompt import (
    IMAGE_TOKEN,
    IMAGE_TOKEN_ID,
    SYSTEM_PROMPT,
    build_prompt,
    question_token_ids,
    tokenize_prompt,
)
from shirg.testing import build_tiny_tokenizer

QUESTION = "What is the total value in 2019?"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return AutoTokenizer.from_pretrained(str(build_tiny_tokenizer(tmp_path_factory.mktemp("tok"))))


def test_system_prompt_text():
    assert SYSTEM_PROMPT == (
        "You are a helpful language and vision assistant. You are able to understand the visual content that "
        "the user provides, and assist the user with a variety of tasks using natural language."
    )
    assert IMAGE_TOKEN == "<image>" and IMAGE_TOKEN_ID == -200


def test_build_prompt_layout(tokenizer):
    prompt = build_prompt(QUESTION, tokenizer)
    system_turn = f"<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{SYSTEM_PROMPT}<|eot_id|>"
    assert prompt.startswith(system_turn)
    assert f"<|start_header_id|>user<|end_header_id|>\n\n<image>\n{QUESTION}<|eot_id|>" in prompt
    assert prompt.endswith("<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    assert prompt.count(IMAGE_TOKEN) == 1


def test_tokenize_prompt_places_image_id_once(tokenizer):
    prompt = build_prompt(QUESTION, tokenizer)
    ids = tokenize_prompt(prompt, tokenizer)
    assert ids.count(IMAGE_TOKEN_ID) == 1
    bos = tokenizer.convert_tokens_to_ids("<|begin_of_text|>")
    assert ids[0] == bos and ids.count(bos) == 1  # the template's BOS only, nothing added on top
    k = ids.index(IMAGE_TOKEN_ID)
    before, after = prompt.split(IMAGE_TOKEN)
    assert tokenizer.decode(ids[:k]) == before and tokenizer.decode(ids[k + 1:]) == after
    header_text = "<|start_header_id|>assistant<|end_header_id|>\n\n"
    header = tokenizer(header_text, add_special_tokens=False)["input_ids"]
    assert ids[-len(header):] == header


@pytest.mark.parametrize("bad", ["no image here", "<image> twice <image>"])
def test_tokenize_prompt_needs_exactly_one_placeholder(tokenizer, bad):
    with pytest.raises(ConfigError, match="exactly one"):
        tokenize_prompt(bad, tokenizer)


def test_question_token_ids_are_plain(tokenizer):
    ids = question_token_ids(QUESTION, tokenizer)
    assert ids and not set(ids) & set(tokenizer.all_special_ids)
    assert tokenizer.decode(ids) == QUESTION
    assert question_token_ids("  " + QUESTION + "\n", tokenizer) == ids


@pytest.mark.parametrize("bad", ["", "   \n\t"])
def test_empty_question_is_rejected(tokenizer, bad):
    with pytest.raises(ConfigError, match="empty"):
        build_prompt(bad, tokenizer)
    with pytest.raises(ConfigError, match="empty"):
        question_token_ids(bad, tokenizer)


def test_question_with_placeholder_is_rejected(tokenizer):
    with pytest.raises(ConfigError, match="placeholder"):
        build_prompt("look at <image> please", tokenizer)
