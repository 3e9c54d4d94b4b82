"""The training checkpoint format: folder names and the RNG states every process saves.

``<output_dir>/checkpoints/step-NNNNNNNN/`` holds the trainable weights, optimizer, scheduler, each
process's RNG states (``rng-<rank>.pt``, read with ``weights_only=True``) and ``state.json`` (the data
position); DeepSpeed checkpoints hold the engine's partitioned state in ``accelerate/`` and the
trainable names in ``trainable.json``. ``metrics.jsonl`` beside them logs one line per step.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINTS = "checkpoints"
METRICS = "metrics.jsonl"
ENGINE_STATE = "accelerate"  # DeepSpeed checkpoints: accelerate.save_state's folder (partitioned engine state)
TRAINABLE_NAMES = "trainable.json"  # DeepSpeed checkpoints: the trainable parameter names (weights are in the engine)


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dirs(output_dir: str | Path) -> list[Path]:
    root = Path(output_dir) / CHECKPOINTS
    return sorted(p for p in root.glob("step-*") if p.is_dir()) if root.is_dir() else []
