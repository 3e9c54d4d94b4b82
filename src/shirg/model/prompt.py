"""LaViDa's prompt: LLaDA chat template, the system prompt, and the ``<image>`` placeholder.

The prompt text comes from the checkpoint tokenizer's own chat template; the image placeholder is
replaced by the id ``IMAGE_TOKEN_ID`` (-200) when tokenizing, and the model later swaps that one id
for the image's feature block.
"""

from __future__ import annotations

from typing import Any

from shirg.errors import ConfigError

SYSTEM_PROMPT = (
    "You are a helpful language and vision assistant. You are able to understand the visual content "
    "that the user provides, and assist the user with a variety of tasks using natural language."
)
IMAGE_TOKEN = "<image>"
IMAGE_TOKEN_ID = -200


def _check_question(question: str) -> str:
    if not isinstance(question, str) or not question.strip():
        raise ConfigError("the question is empty: pass a non-empty question about the image")
    if IMAGE_TOKEN in question:
        raise ConfigError(
            f"the question contains {IMAGE_TOKEN!r}; the image placeholder is added for you, remove it"
        )
    return question


def build_prompt(question: str, tokenizer: Any) -> str:
    """Prompt text: system turn, user turn ``"<image>\\n" + question``, then the assistant header."""
    _check_question(question)
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            "the tokenizer has no chat template; load the tokenizer shipped with the LaViDa checkpoint "
            "(its tokenizer_config.json carries the LLaDA template)"
        )
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"{IMAGE_TOKEN}\n{question}"},
    ]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def tokenize_prompt(prompt: str, tokenizer: Any) -> list[int]:
    """Token ids of ``prompt`` with ``IMAGE_TOKEN_ID`` where the single ``<image>`` stood.

    Special tokens come only from the template text itself (no BOS/EOS is added on top).
    """
    chunks = prompt.split(IMAGE_TOKEN)
    if len(chunks) != 2:
        raise ConfigError(
            f"the prompt must contain exactly one {IMAGE_TOKEN!r} placeholder, found {len(chunks) - 1}; "
            "build it with build_prompt()"
        )
    before, after = (tokenizer(c, add_special_tokens=False)["input_ids"] if c else [] for c in chunks)
    return [*before, IMAGE_TOKEN_ID, *after]


def question_token_ids(question: str, tokenizer: Any) -> list[int]:
    """The question's own token ids (stripped, as the template trims it), without special tokens."""
    ids = tokenizer(_check_question(question).strip(), add_special_tokens=False)["input_ids"]
    special = set(tokenizer.all_special_ids)
    return [i for i in ids if i not in special]
