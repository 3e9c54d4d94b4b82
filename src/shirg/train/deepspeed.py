"""DeepSpeed's decisions for the trainer, kept apart from the loop (pure, unit-tested).

The DeepSpeed path (``accelerate launch`` with a ``distributed_type: DEEPSPEED`` config) is written
against accelerate's documented behaviour but has NOT been run end to end (deepspeed is not a shirg
dependency and is not installed in CI): the engine owns gradient accumulation, loss scaling,
clipping and the optimizer step, and ZeRO-3's partitioned parameters are gathered before weights
are written. Every place the trainer branches on it asks the functions here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from shirg.train.config import TrainConfig


def is_deepspeed(distributed_type: Any) -> bool:
    """Whether accelerate runs this process under DeepSpeed (``acc.distributed_type``)."""
    return str(getattr(distributed_type, "value", distributed_type)).upper() == "DEEPSPEED"


def zero_stage(acc: Any) -> int:
    """The DeepSpeed ZeRO stage of ``acc``, 0 when DeepSpeed is not in use."""
    if not is_deepspeed(acc.distributed_type):
        return 0
    return int(acc.state.deepspeed_plugin.zero_stage or 0)


def loss_divisor(deepspeed: bool, accum: int, accelerator_accum: int = 1) -> float:
    """What a micro-batch loss is divided by before ``acc.backward`` so that one optimizer step's
    gradient is the mean over its ``accum`` micro-batches, scaled exactly once.

    Outside DeepSpeed, ``acc.backward`` itself divides by ``acc.gradient_accumulation_steps`` (1 unless
    ``accelerate launch --gradient_accumulation_steps`` set it), so the trainer divides by the rest.
    Under DeepSpeed the engine's ``backward`` divides by its own ``gradient_accumulation_steps``, which
    the trainer sets to ``accum``: dividing again would scale the gradients by 1/accum twice.
    """
    if accum < 1 or accelerator_accum < 1:
        raise ValueError("gradient accumulation steps must be >= 1")
    return 1.0 if deepspeed else accum / accelerator_accum


def grad_norm_value(norm: Any) -> float | None:
    """The logged gradient norm: a float, or None when none is known. ``acc.clip_grad_norm_`` returns
    None under DeepSpeed before the engine is set up (and some DeepSpeed versions report None or a
    non-finite norm), which must not crash the loop."""
    if norm is None:
        return None
    value = float(norm.item() if hasattr(norm, "item") else norm)
    return value if math.isfinite(value) else None


def configure_deepspeed(ds_config: dict[str, Any], cfg: TrainConfig, num_processes: int) -> list[str]:
    """Make the DeepSpeed config (``acc.state.deepspeed_plugin.deepspeed_config``) agree with the
    training config before ``acc.prepare``: the engine accumulates ``run.grad_accum`` micro-batches of
    ``run.batch_size`` per process and clips to ``optim.max_grad_norm`` (0 = off). The trainer feeds
    its own batches (no prepared DataLoader), so the micro-batch size must be explicit here.
    Returns a warning for each value a launch config set differently (the training config wins)."""
    run = cfg.run
    wanted = {
        "gradient_accumulation_steps": run.grad_accum,
        "train_micro_batch_size_per_gpu": run.batch_size,
        "train_batch_size": run.batch_size * run.grad_accum * num_processes,
        "gradient_clipping": float(cfg.optim.max_grad_norm or 0.0),
    }
    warnings = []
    for key, value in wanted.items():
        old = ds_config.get(key, "auto")
        if old not in ("auto", None) and old != value:
            warnings.append(f"DeepSpeed config sets {key}={old}; using {value} from the training config")
        ds_config[key] = value
    return warnings


def gathered(params: Iterable[torch.nn.Parameter], stage: int, modifier_rank: int | None = None
             ) -> AbstractContextManager:
    """Full values of ZeRO-3 partitioned ``params`` inside the context (entered on every process);
    a no-op for any other stage. deepspeed is imported only here, when it is in use."""
    if stage != 3:
        return nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(params), modifier_rank=modifier_rank)
