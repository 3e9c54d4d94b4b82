"""Load LaViDa checkpoints from a local folder: config, safetensors (single or sharded), tokenizer.

The model is built on the meta device and every tensor is read straight into the target dtype
and device, so the 8B model in bf16 never exists as an fp32 copy.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from shirg.checkpoint import (
    check_floating,
    check_state_dict,
    key_index,
    load_tensors,
    read_config,
    read_safetensors_file,
    tensor_shapes,
)
from shirg.errors import CheckpointError, resolve_device, resolve_dtype
from shirg.hub import resolve_model
from shirg.io import atomic_write
from shirg.model.lavida import LavidaConfig, LavidaModel
from shirg.safety import TRUST_REMOTE_CODE, check_no_remote_code
from shirg.tokens.coords import CoordinateEmbedding
from shirg.vision.siglip import LAVIDA_VISION_PREFIX, layer_count, tower_config_from_folder

log = logging.getLogger(__name__)
PREFIX = "model."
SHIRG_WEIGHTS = "shirg_weights.safetensors"
COORD_INIT_SEED = 0



def load_tokenizer(path: str | Path):
    """The tokenizer shipped with the checkpoint, from local files only."""
    from transformers import AutoTokenizer

    folder = Path(path)
    if not (folder / "tokenizer.json").is_file() and not (folder / "tokenizer_config.json").is_file():
        raise CheckpointError(
            f"{folder} has no tokenizer.json / tokenizer_config.json; LaViDa checkpoints ship their tokenizer, "
            "copy it into the folder"
        )
    check_no_remote_code(folder)  # before transformers is asked: it never sees a folder that wants code run
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=TRUST_REMOTE_CODE)
    except Exception as e:  # noqa: BLE001 - transformers raises many types for a broken tokenizer folder
        raise CheckpointError(f"cannot load the tokenizer in {folder}: {_one_line(e)}") from e


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return (text[:300] + " ...") if len(text) > 300 else text or type(e).__name__


def with_local_tower_config(cfg: dict, folder: Path) -> dict:
    """``cfg`` with ``vision_config`` taken from the local folder ``mm_vision_tower`` names, when
    config.json has none and that folder (as given, or relative to the checkpoint) holds a SigLIP
    config; otherwise unchanged (so400m is assumed, as LaViDa's released configs name it)."""
    tower = cfg.get("mm_vision_tower")
    if cfg.get("vision_config") or not isinstance(tower, str) or not tower:
        return cfg
    for place in (Path(tower), folder / tower):
        if place.is_dir():
            vc = tower_config_from_folder(place)
            if vc is not None:
                return {**cfg, "vision_config": vc}
    return cfg


def _initial_coord_embed(dim: int) -> CoordinateEmbedding:
    """A fresh coordinate embedding, the same on every load: its first layer is random (the output layer
    is zero), and drawing it from the global RNG made two loads of one folder differ and moved the
    caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(COORD_INIT_SEED)
        return CoordinateEmbedding(dim)


def load(
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
    shirg_weights: str | Path | None = None,
    revision: str | None = None,
) -> LavidaModel:
    """Load a LaViDa-LLaDA checkpoint folder (config.json, safetensors, tokenizer).

    Args:
        path: checkpoint folder, or a Hugging Face repo id (``org/name``; a local folder wins),
            resolved through the hub cache (see :mod:`shirg.hub`); ``revision`` picks its version.
        device: "cpu" or "cuda" (or a torch.device).
        dtype: None/"auto" = bf16 on CUDA, fp32 on CPU.
        shirg_weights: a SHIRG weights file (coordinate embedding); by default
            ``<path>/shirg_weights.safetensors`` when present, else zero-initialized.
    Raises:
        CheckpointError naming every missing, unexpected or mis-shaped tensor.
    """
    folder = resolve_model(path, revision)
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    cfg = with_local_tower_config(read_config(folder), folder)
    index = key_index(folder)
    try:
        config = LavidaConfig.from_dict(cfg, vision_layers=layer_count(index, LAVIDA_VISION_PREFIX) or None)
        with torch.device("meta"):
            model = LavidaModel(config)
    except (TypeError, ValueError, KeyError, AttributeError, RuntimeError) as e:  # e.g. "d_model": "abc"
        raise CheckpointError(f"{folder / 'config.json'} has a value of the wrong type or range: "
                              f"{_one_line(e)}") from e
    expected = {PREFIX + k: v.shape for k, v in model.model.state_dict().items()}
    check_state_dict(expected, tensor_shapes(index, index), "LaViDa checkpoint", folder)

    state = load_tensors(index, list(index), rename=lambda n: n[len(PREFIX):], device=device, dtype=dtype)
    check_floating(state, folder)
    model.model.load_state_dict(state, strict=True, assign=True)
    model.shirg["coord_embed"] = _initial_coord_embed(config.vision.hidden_size).to(device=device, dtype=dtype)
    model.model.vision_tower.rebuild_buffers()  # non-persistent, so built on meta
    weights = Path(shirg_weights) if shirg_weights else folder / SHIRG_WEIGHTS
    if shirg_weights or weights.is_file():
        load_shirg_weights(model, weights)
    model.tokenizer = load_tokenizer(folder)
    return model.eval()


def save_shirg_weights(model: LavidaModel, path: str | Path) -> Path:
    """Write SHIRG's own weights (coordinate embedding) as safetensors, atomically."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.shirg.state_dict().items()}
    return atomic_write(path, lambda p: save_file(state, str(p), metadata={"format": "pt"}))


def load_shirg_weights(model: LavidaModel, path: str | Path) -> None:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"SHIRG weights file {path} does not exist")
    state = read_safetensors_file(path)
    check_floating(state, path)
    expected = {k: v.shape for k, v in model.shirg.state_dict().items()}
    check_state_dict(expected, {k: v.shape for k, v in state.items()}, "SHIRG weights", path)
    model.shirg.load_state_dict({k: v.to(model.dtype) for k, v in state.items()})
