"""Training SHIRG's LoRA adapter (docs/method.md section 8): config, data, loss, loop, export.

- ``config``: the :class:`TrainConfig` dataclass tree read from YAML.
- ``lora``: PEFT targets (anchored regexes), fully trained components, parameter groups.
- ``data``: LLaVA records, mixtures, converters, deterministic batches.
- ``loss``: LaViDa's complementary-masking diffusion loss.
- ``trainer``: the accelerate loop with exact, atomic checkpoints.
- ``adapter``: saving / applying adapters and merging them into LaViDa checkpoints.
"""

from shirg.train.config import TrainConfig, load_config

__all__ = ["TrainConfig", "load_config", "train"]


def train(cfg: TrainConfig, resume: bool | str = False, stop_after: int | None = None,
          resume_with_changes: bool = False) -> dict:
    """Run training; see :func:`shirg.train.trainer.train`."""
    from shirg.train.trainer import train as _train

    return _train(cfg, resume=resume, stop_after=stop_after, resume_with_changes=resume_with_changes)
