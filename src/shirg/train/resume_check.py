"""What ``shirg train --resume`` may and may not change.

A resumed run is bit-identical to an uninterrupted one only when everything that shapes the
optimisation is the same: batch, accumulation, seed, steps, every optimiser and schedule number, the
data and the trainable parts. Those settings are compared with the configuration the checkpoint was
written under; a difference is refused unless ``--resume-with-changes`` is given, and then it is
logged and recorded in ``OUTPUT/resume_changes.jsonl``. Book-keeping (output folder, checkpoint
interval, logging, progress bar, the checkpoint's own path) may change freely.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from shirg.errors import CheckpointError, ConfigError

CONFIG_COPY = "config.yaml"  # the run's configuration, also stored in every checkpoint
CHANGES_FILE = "resume_changes.jsonl"
FREE = {  # section -> keys that may differ on resume
    "model": {"path", "shirg_weights"},  # resumed weights come from the checkpoint
    "data": {"num_workers"},
    "run": {"output_dir", "checkpoint_every", "keep_checkpoints", "log_every", "tensorboard", "progress",
            "find_unused_parameters", "gradient_checkpointing"},
}


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out |= _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return {prefix: list(data) if isinstance(data, tuple) else data}


def changed_settings(saved: dict, now: dict, defaults: dict | None = None) -> dict[str, tuple[Any, Any]]:
    """``section.key`` -> (saved, now) for every setting that breaks exactness when changed. A setting
    the saved config lacks (written before the setting existed) counts as its value in ``defaults``,
    so a new option whose default keeps the old behaviour does not block resuming older runs."""
    a, b = _flatten(saved), _flatten(now)
    a = {**{k: v for k, v in _flatten(defaults or {}).items() if k not in a}, **a}
    out = {}
    for key in sorted(set(a) | set(b)):
        section, _, name = key.partition(".")
        if name.split(".")[0] in FREE.get(section, set()):
            continue
        if a.get(key) != b.get(key):
            out[key] = (a.get(key), b.get(key))
    return out


def saved_config(checkpoint: Path, output_dir: Path) -> dict | None:
    """The configuration a checkpoint was written under: its own copy, else the run folder's."""
    for path in (checkpoint / CONFIG_COPY, output_dir / CONFIG_COPY):
        if path.is_file():
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (yaml.YAMLError, UnicodeDecodeError) as e:
                raise CheckpointError(f"{path} is not readable YAML ({e}); the run folder is damaged") from e
            if not isinstance(data, dict):
                raise CheckpointError(f"{path} must hold a mapping; the run folder is damaged")
            return data
    return None


def check_resume(checkpoint: Path, output_dir: Path, now: dict, allow_changes: bool, step: int,
                 defaults: dict | None = None) -> dict:
    """Refuse (ConfigError) or, with ``allow_changes``, record the settings that differ from the
    checkpoint's (``defaults``: every setting's default, for configs saved before it existed).
    Returns the differences."""
    saved = saved_config(checkpoint, output_dir)
    if saved is None:
        return {}
    changes = changed_settings(saved, json.loads(json.dumps(now)), json.loads(json.dumps(defaults or {})))
    if changes and not allow_changes:
        shown = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in list(changes.items())[:4])
        more = f" (and {len(changes) - 4} more)" if len(changes) > 4 else ""
        raise ConfigError(f"--resume: the config differs from the one checkpoint {checkpoint.name} was written "
                          f"under ({shown}{more}); a resumed run is exact only with the same settings. Restore "
                          "them, or pass --resume-with-changes to continue anyway (recorded in "
                          f"{CHANGES_FILE})")
    if changes:
        record = {"step": step, "checkpoint": str(checkpoint),
                  "changes": {k: {"saved": old, "now": new} for k, (old, new) in changes.items()}}
        with open(output_dir / CHANGES_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
    return changes
