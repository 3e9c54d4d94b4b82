"""The small SHIRG-LaViDa shipped inside the package (trained here on EntityGrid; configs/small/).

``assets/small/model/`` is a checkpoint in LaViDa's exact layout (config.json, model.safetensors,
tokenizer), trained from scratch (stage 0: the tower; stage 1: projector and LM; then colour look-alike
reading and every question type again, docs/small.md);
``assets/small/adapter/`` is the SHIRG adapter (PEFT LoRA on the projector and tower layers 0-3, the
coordinate embedding and a relevance head that SHIRG's text score reads);
``assets/small/demo.png`` + ``demo.json`` is a held-out EntityGrid sample for ``shirg demo``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from shirg.errors import ConfigError

ROOT = Path(__file__).resolve().parent / "assets" / "small"


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise ConfigError(f"the bundled {what} is missing ({path}); reinstall shirg, or pass --model DIR "
                          "to use a checkpoint of your own")
    return path


def model_dir() -> Path:
    """The bundled small model: a LaViDa-layout checkpoint folder."""
    return _need(ROOT / "model", "small model")


def adapter_dir() -> Path:
    """The bundled SHIRG adapter folder (LoRA + coordinate embedding + relevance head)."""
    return _need(ROOT / "adapter", "SHIRG adapter")


@dataclass
class DemoSample:
    image: Path
    question: str
    answers: list[str]
    type: str
    boxes: list[list[int]]


def demo_sample() -> DemoSample:
    """The bundled held-out EntityGrid image and question (with its answer and the entity's box)."""
    meta = json.loads(_need(ROOT / "demo.json", "demo question").read_text())
    return DemoSample(image=_need(ROOT / meta["image"], "demo image"), question=meta["question"],
                      answers=list(meta["answers"]), type=meta["type"], boxes=meta.get("boxes", []))
