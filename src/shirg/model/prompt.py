"""LaViDa's prompt: LLaDA chat template, the system prompt, and the ``<image>`` placeholder.

The prompt text comes from the checkpoint tokenizer's own chat template; the image placeholder is
replaced by the id ``IMAGE_TOKEN_ID`` (-200) when tokenizing, and the model later swaps that one id
for the image's feature block.
"""

from __future__ import annotations

from typing import Any

from shirg.errors import ConfigError
from shirg.limits import check_text

SYSTEM_PROMPT = (
    "You are a helpful language and vision assistant. You are able to understand the visual content "
    "that the user provides, and assist the user with a variety of tasks using natural language."
)
IMAGE_TOKEN = "<image>"
IMAGE_TOKEN_ID = -200


def _check_question(question: str) -> str:
    if isinstance(question, str):
        check_text(question)  # valid UTF-8 (no undecodable bytes), within the length limit
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


_SLOT = "\ue000"  # a private-use character marking where the user's text goes in the rendered template


def user_text_ids(text: str, tokenizer: Any) -> list[int]:
    """Token ids of text a user typed: always plain text. ``<|eot_id|>`` typed in a question is the
    characters ``<``, ``|``, ... never the control id (``split_special_tokens``)."""
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"] if text else []


def prompt_token_ids(question: str, tokenizer: Any) -> list[int]:
    """Token ids of the full prompt for ``question``, ``IMAGE_TOKEN_ID`` where ``<image>`` stood.

    Special tokens come only from the chat template: the template is rendered around a marker, its
    text is tokenized with special tokens recognised, the question's (as the template put it, e.g.
    trimmed) as plain text. For a question without special-token strings the ids equal
    ``tokenize_prompt(build_prompt(question))``.
    """
    _check_question(question)
    if _SLOT in question:
        raise ConfigError("the question contains the private-use character U+E000; remove it")
    full = build_prompt(question, tokenizer)
    head, sep, tail = build_prompt(_SLOT, tokenizer).partition(_SLOT)
    if not sep or _SLOT in tail or not (full.startswith(head) and full.endswith(tail)):
        raise ConfigError("the tokenizer's chat template does not put the question into the prompt verbatim; "
                          "use the LaViDa checkpoint's own tokenizer")
    user = full[len(head):len(full) - len(tail)]  # the question as the template wrote it
    before, image, lead = head.rpartition(IMAGE_TOKEN)
    if not image or IMAGE_TOKEN in before or IMAGE_TOKEN in tail:
        raise ConfigError(f"the chat template must hold exactly one {IMAGE_TOKEN!r} before the question")
    template = tokenize_prompt(before + IMAGE_TOKEN, tokenizer)  # ends with IMAGE_TOKEN_ID
    return [*template, *user_text_ids(lead + user, tokenizer),
            *(tokenizer(tail, add_special_tokens=False)["input_ids"] if tail else [])]


def question_token_ids(question: str, tokenizer: Any) -> list[int]:
    """The question's own token ids (stripped, as the template trims it), as plain text."""
    ids = user_text_ids(_check_question(question).strip(), tokenizer)
    special = set(tokenizer.all_special_ids)
    return [i for i in ids if i not in special]
