"""LaViDa's evaluation-time prompt token ids (``prompt_style="lavida-eval"``).

LaViDa's evaluation splits the prompt text at ``<image>``, tokenizes each piece with the
tokenizer's own special tokens added, and joins the pieces LLaVA's way: when the first piece starts
with the BOS id, that BOS is kept once and the first id of EVERY piece is dropped (and one image
id goes between the pieces); otherwise the pieces are joined as they are. What comes out therefore
depends on the tokenizer's settings:

- a tokenizer that adds no BOS (LLaDA's: ``add_bos_token`` false) whose chat template writes the
  BOS text itself: the first piece starts with the template's BOS, so the first token of the piece
  after ``<image>`` - the ``"\\n"`` - is dropped;
- a tokenizer that adds a BOS: the first piece is [BOS, BOS(template), ...] and keeps both (a double
  BOS); the later piece loses only its own added BOS.

We tokenize the pieces as plain text (``tokenize_prompt``: special tokens only from the template)
and add the tokenizer's own prefix / suffix ids around each piece, so user text still never becomes
special tokens, then apply the joining rule above.
"""

from __future__ import annotations

from typing import Any

from shirg.errors import ConfigError
from shirg.model.prompt import IMAGE_TOKEN_ID

PROMPT_STYLES = ("shirg", "lavida-eval")


def added_special_ids(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids the tokenizer adds before and after a text when asked for special tokens."""
    probe = "a"
    plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    for i in range(len(full) - len(plain) + 1):
        if full[i : i + len(plain)] == plain:
            return list(full[:i]), list(full[i + len(plain) :])
    raise ConfigError("cannot tell which special tokens this tokenizer adds; use prompt style 'shirg'")


def lavida_eval_ids(prompt_ids: list[int], tokenizer: Any) -> list[int]:
    """Our prompt ids (one ``IMAGE_TOKEN_ID``) re-joined as LaViDa's evaluation tokenizes the same text."""
    if prompt_ids.count(IMAGE_TOKEN_ID) != 1:
        raise ConfigError("the prompt must hold exactly one image placeholder")
    p = prompt_ids.index(IMAGE_TOKEN_ID)
    before, after = added_special_ids(tokenizer)
    pieces = [before + prompt_ids[:p] + after, before + prompt_ids[p + 1 :] + after]
    bos = tokenizer.bos_token_id
    offset = 1 if bos is not None and pieces[0] and pieces[0][0] == bos else 0
    out = pieces[0][:offset]
    for part in (pieces[0], [IMAGE_TOKEN_ID] * (offset + 1), pieces[1]):
        out += part[offset:]
    return out


def prompt_ids_for_style(prompt_ids: list[int], tokenizer: Any, style: str) -> list[int]:
    if style not in PROMPT_STYLES:
        raise ConfigError(f"unknown prompt style {style!r}; valid: {', '.join(PROMPT_STYLES)}")
    return list(prompt_ids) if style == "shirg" else lavida_eval_ids(prompt_ids, tokenizer)


def lavida_eval_text(answer_ids: list[int], tokenizer: Any) -> str:
    """LaViDa's lmms-eval decoding of the answer slots: all of them decoded with special tokens
    skipped (nothing is cut at the first end-of-text), leading "!" stripped, then whitespace.

    (Its sampler returns the prompt slots too, as id 0, which decodes to "!"; the strip removes them,
    and with them any "!" the answer itself starts with.)
    """
    return tokenizer.decode(answer_ids, skip_special_tokens=True).lstrip("!").strip()
