"""Trained weights out and back in: PEFT adapter folders, SHIRG weights, merged LaViDa checkpoints.

An adapter folder holds PEFT's ``adapter_config.json`` + ``adapter_model.safetensors`` (LoRA
weights only) and, when the coordinate embedding was trained, ``shirg_weights.safetensors``.
:func:`export_merged` folds the LoRA weights into the base weights and writes a checkpoint in
LaViDa's own layout, which :func:`shirg.load` reads without PEFT.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from shirg.checkpoint import (
    INDEX_NAME,
    check_floating,
    read_config,
    read_safetensors_file,
    shard_by_bytes,
    write_safetensors_folder,
)
from shirg.errors import CheckpointError, resolve_dtype
from shirg.io import atomic_write, honour_umask, write_dir
from shirg.model.adapter import ADAPTER_CONFIG, RELEVANCE_HEAD, apply_adapter, load_model
from shirg.model.lavida import LavidaModel
from shirg.model.loading import PREFIX, SHIRG_WEIGHTS, save_shirg_weights

log = logging.getLogger(__name__)
WEIGHT_FILES = (".safetensors", ".bin", ".pt", ".pth")


def save_adapter(peft_model, lavida: LavidaModel, out_dir: str | Path, save_shirg: bool = True) -> Path:
    """PEFT adapter (LoRA weights only, safetensors) plus SHIRG weights into ``out_dir``, and the
    relevance head (``relevance_head.safetensors``) when the model carries one."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if peft_model is not None:
        peft_model.save_pretrained(str(out), safe_serialization=True)
    if save_shirg:
        save_shirg_weights(lavida, out / SHIRG_WEIGHTS)
    if lavida.relevance_head is not None:
        state = {k: v.detach().float().cpu().contiguous() for k, v in lavida.relevance_head.state_dict().items()}
        meta = {"format": "pt", "reads": lavida.relevance_head.reads, "pool": lavida.relevance_head.pool}
        atomic_write(out / RELEVANCE_HEAD, lambda p: save_file(state, str(p), metadata=meta))
    return honour_umask(out)  # PEFT's safetensors file is written 0600


def merge_lora(model: LavidaModel) -> LavidaModel:
    """Fold injected LoRA layers into their base Linear layers (in place) and remove them."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
    return model


def write_lavida_checkpoint(model: LavidaModel, out_dir: str | Path, source_dir: str | Path | None = None,
                            max_shard_bytes: int = 5 * 2**30) -> Path:
    """The LaViDa layout: ``model.*`` tensors in (sharded) safetensors, SHIRG weights apart, and
    every non-weight file of ``source_dir`` (config, tokenizer) copied. Written straight into
    ``out_dir``; wrap the call in :func:`shirg.io.write_dir` for an all-or-nothing folder."""
    out = Path(out_dir)
    state = {PREFIX + k: v.detach().cpu().contiguous() for k, v in model.model.state_dict().items()}
    write_safetensors_folder(out, state, shard_by_bytes(state, max_shard_bytes))
    if source_dir is not None:
        for f in Path(source_dir).iterdir():
            if f.is_file() and not f.name.endswith(WEIGHT_FILES) and f.name != INDEX_NAME:
                shutil.copy2(f, out / f.name)
    config_path = out / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else dict(model.config.raw)
    config["torch_dtype"] = str(model.dtype).removeprefix("torch.")
    config_path.write_text(json.dumps(config, indent=2))
    save_shirg_weights(model, out / SHIRG_WEIGHTS)
    return out


PATCH_HEAD_PREFIX = "patch_head."  # shirg.train.patch_labels' head (LavidaModel.patch_head during stage 0)
RELEVANCE_HEAD_PREFIX = "relevance_head."  # data.relevance's head: kept in the adapter folder, not the model


def load_training_checkpoint(model: LavidaModel, checkpoint: str | Path) -> LavidaModel:
    """Put an intermediate ``shirg train`` checkpoint (``checkpoints/step-N``) into ``model``, the
    base model that run started from: its LoRA layers (unmerged) and every trained weight."""
    ckpt = Path(checkpoint)
    weights_file = ckpt / "trainable.safetensors"
    if not weights_file.is_file():
        raise CheckpointError(f"{ckpt} is not a `shirg train` checkpoint (no trainable.safetensors); pass a "
                              "checkpoints/step-N folder of a run without DeepSpeed")
    adapter = ckpt / "adapter"
    if (adapter / ADAPTER_CONFIG).is_file():
        model = apply_adapter(model, adapter, shirg_weights=False)
    weights = read_safetensors_file(weights_file)
    check_floating(weights, weights_file)
    # a stage-0 run (data.objective patch_labels) also checkpoints its per-patch head, which is not
    # part of LaViDa and is dropped from the model it writes: drop it here too (and a relevance head,
    # which only the final adapter folder holds)
    weights = {k: v for k, v in weights.items() if not k.startswith((PATCH_HEAD_PREFIX, RELEVANCE_HEAD_PREFIX))}
    params = dict(model.named_parameters())
    unknown = sorted(set(weights) - set(params))
    if unknown:
        raise CheckpointError(f"{ckpt} holds weights this model lacks ({', '.join(unknown[:3])}); pass the base "
                              "checkpoint the training run started from (its model.path)")
    with torch.no_grad():
        for name, tensor in weights.items():
            if params[name].shape != tensor.shape:
                raise CheckpointError(f"{ckpt}: {name} has shape {tuple(tensor.shape)}, the model "
                                      f"{tuple(params[name].shape)}; pass the run's base checkpoint")
            params[name].copy_(tensor.to(params[name].dtype))
    return model.eval()


def export_merged(model_dir: str | Path, adapter_dir: str | Path | None, out_dir: str | Path,
                  dtype: str | torch.dtype | None = None, device: str = "cpu",
                  checkpoint: str | Path | None = None) -> Path:
    """Load base + adapter (or an intermediate training ``checkpoint``), merge LoRA into the base
    weights in fp32, write a plain LaViDa checkpoint in ``dtype`` (default: the base checkpoint's
    ``torch_dtype``, else float32). The folder is written next to ``out_dir`` and renamed into
    place, so ``out_dir`` is complete or absent."""
    out = Path(out_dir)
    if out.exists():
        raise CheckpointError(f"{out} already exists; choose a new --out folder")
    if adapter_dir is not None and checkpoint is not None:
        raise CheckpointError("give an adapter or a training checkpoint, not both")
    target = resolve_dtype(dtype or read_config(model_dir).get("torch_dtype") or "float32", torch.device(device))
    model = load_model(model_dir, device=device, dtype=torch.float32)
    if adapter_dir is not None:
        model = apply_adapter(model, adapter_dir)
        merge_lora(model)
    if checkpoint is not None:
        model = load_training_checkpoint(model, checkpoint)
        merge_lora(model)
    model = model.to(target)
    return write_dir(out, lambda d: write_lavida_checkpoint(model, d, source_dir=model_dir))
