"""Evaluation recipes: named sets of generation settings per task.

``lavida-paper`` is what LaViDa's published evaluation ran for its TextVQA / DocVQA / ChartQA
numbers (its ``eval/run.sh`` through its lmms-eval model ``llava_llada``): the prefix cache OFF
(the script passes the misspelt ``refix_lm=True``, so every step recomputes the whole sequence),
LLaDA's uniform schedule with ``step_per_block`` defaulting to the block length (one token per
step: ``steps`` = answer length), block length min(128, max_new_tokens), temperature 0, the mask
id allowed as a prediction, the eval-time prompt ids, lmms-eval decoding (all answer slots, special
tokens skipped, leading "!" stripped), bilinear pooling on (the HD checkpoint), and each task's
lmms-eval prompt. docs/lavida_recipe.md lists every setting with the upstream file it comes from.
"""

from __future__ import annotations

from typing import Any

from shirg.errors import ConfigError

# generation settings common to every task of the paper recipe
_PAPER_COMMON: dict[str, Any] = dict(
    schedule="uniform", shift=3.0, temperature=0.0, cache="none", predict_mask=True,
    prompt_style="lavida-eval", decode="lavida-eval", pool="on",
)


def _paper(gen_length: int) -> dict[str, Any]:
    block = min(128, gen_length)
    return dict(_PAPER_COMMON, gen_length=gen_length, block_length=block, steps=gen_length)


RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "lavida-paper": {
        # max_new_tokens of the task yamls in the lmms-eval 0.3.0 that LaViDa's eval/ folder bundles
        "chartqa": _paper(16),  # chartqa.yaml (and chartqa_lite.yaml): 16
        "docvqa": _paper(32),  # docvqa/_default_template_docvqa_yaml: 32
        "textvqa": _paper(256),  # textvqa/_default_template_textvqa_yaml sets none: llava_llada's default 256
    },
}

# where each setting comes from (for docs/lavida_recipe.md and run metadata)
SOURCES: dict[str, str] = {
    "cache": "eval/run.sh (--gen_kwargs refix_lm=True: misspelt, so generate() keeps prefix_lm=False)",
    "schedule": "eval/run.sh passes no schedule -> llava/model/language_model/llada/generate.py "
                "get_num_transfer_tokens (uniform)",
    "steps": "eval/lmms_eval/models/llava_llada.py: step_per_block defaults to block_length, and "
             "generate.py uses min(step_per_block, block_length) steps per block",
    "block_length": "eval/lmms_eval/models/llava_llada.py: block_length = min(128, max_new_tokens)",
    "gen_length": "max_new_tokens of lmms-eval 0.3.0's task yamls (LaViDa's eval/lmms_eval/tasks/): "
                  "chartqa/chartqa.yaml 16, docvqa/_default_template_docvqa_yaml 32; "
                  "textvqa/_default_template_textvqa_yaml sets none -> llava_llada.py default 256",
    "temperature": "eval/lmms_eval/models/llava_llada.py forces temperature 0",
    "predict_mask": "generate.py: argmax over the full vocabulary, mask id included",
    "prompt_style": "llava/mm_utils.py tokenizer_image_token (first id of each chunk after <image> dropped "
                    "when the tokenizer adds no BOS)",
    "decode": "llava_llada.py: batch_decode(skip_special_tokens=True), lstrip('!'), strip()",
    "pool": "llava/model/llava_arch.py pools unless NOT_ALWASY_DO_2DPOOL is set (HD checkpoint: on)",
    "shift": "unused by uniform; LaViDa's sampler default 3 (its COCO scripts pass 0.33)",
}


def recipe_names() -> list[str]:
    return list(RECIPES)


def recipe_settings(name: str, task: str) -> dict[str, Any]:
    """The generation settings of recipe ``name`` for ``task`` (a copy)."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; valid recipes: {', '.join(RECIPES)}")
    tasks = RECIPES[name]
    if task not in tasks:
        raise ConfigError(f"recipe {name!r} covers the tasks {', '.join(tasks)}, not {task!r}")
    return dict(tasks[task])
