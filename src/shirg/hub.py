"""Hugging Face repo ids wherever a model folder is accepted (``--model org/name``, ``shirg.load``).

A local folder always wins. Otherwise a name of the form ``org/name`` is resolved with
``huggingface_hub.snapshot_download`` restricted to what ``shirg`` loads - safetensors weights and
their index, config.json, tokenizer files, adapter config - never Python files or pickles. The
cache is ``HF_HUB_CACHE``, else ``$HF_HOME/hub`` (read when called); with ``HF_HUB_OFFLINE`` set
only the cache is used. ``revision`` is a branch, tag or commit (default ``main``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from shirg.errors import CheckpointError

ALLOW_PATTERNS = (
    "*.safetensors", "*.safetensors.index.json", "config.json", "generation_config.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "adapter_config.json",
)
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def is_repo_id(name: str) -> bool:
    return bool(_REPO_ID.match(name)) and ".." not in name


def hub_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface"
    return Path(home) / "hub"


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve_model(name: str | Path, revision: str | None = None) -> Path:
    """A local path as it is; a repo id -> its snapshot folder (downloaded unless offline)."""
    path = Path(name)
    if path.exists() or not is_repo_id(str(name)):
        if revision is not None and path.exists():
            raise CheckpointError(f"--revision {revision} applies to Hugging Face ids, but {name} is a local folder")
        return path
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - huggingface_hub comes with transformers
        raise CheckpointError(f"{name} is no local folder and huggingface_hub is not installed") from e
    try:
        folder = snapshot_download(repo_id=str(name), revision=revision, cache_dir=str(hub_cache_dir()),
                                   allow_patterns=list(ALLOW_PATTERNS), local_files_only=offline())
    except Exception as e:  # noqa: BLE001 - every hub failure becomes one line
        where = "in the local cache " + str(hub_cache_dir()) + (" (HF_HUB_OFFLINE is set)" if offline() else "")
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{name} is neither a local folder nor a Hugging Face model found {where} or on the hub "
            f"(revision {revision or 'main'}): {reason}"
        ) from e
    return Path(folder)
