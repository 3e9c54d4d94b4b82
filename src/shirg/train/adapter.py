"""Trained weights out and back in: PEFT adapter folders, SHIRG weights, merged LaViDa checkpoints.

An adapter folder holds PEFT's ``adapter_config.json`` + ``adapter_model.safetensors`` (LoRA
weights only) and, when the coordinate embedding was trained, ``shirg_weights.safetensors``.
:func:`export_merged` folds the LoRA weights into the base weights and writes a checkpoint in
LaViDa's own layout, which :func:`shirg.load` reads without PEFT.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from shirg.errors import CheckpointError
from shirg.model.lavida import LavidaModel
from shirg.model.loading import PREFIX, SHIRG_WEIGHTS, save_shirg_weights

log = logging.getLogger(__name__)
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
WEIGHT_FILES = (".safetensors", ".bin", ".pt", ".pth")


def save_adapter(peft_model, lavida: LavidaModel, out_dir: str | Path, save_shirg: bool = True) -> Path:
    """PEFT adapter (LoRA weights only, safetensors) plus SHIRG weights into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if peft_model is not None:
        peft_model.save_pretrained(str(out), safe_serialization=True)
    if save_shirg:
        save_shirg_weights(lavida, out / SHIRG_WEIGHTS)
    return out


def apply_adapter(model: LavidaModel, adapter_dir: str | Path, shirg_weights: bool = True) -> LavidaModel:
    """Put a saved adapter's LoRA layers into ``model`` (unmerged, inference only) and load the
    folder's SHIRG weights when present. Returns the same LavidaModel, LoRA layers inside."""
    from shirg.model.loading import load_shirg_weights

    folder = Path(adapter_dir)
    if not folder.is_dir():
        raise CheckpointError(f"adapter folder {folder} does not exist")
    has_lora = (folder / ADAPTER_CONFIG).is_file()
    has_shirg = (folder / SHIRG_WEIGHTS).is_file()
    if not has_lora and not has_shirg:
        raise CheckpointError(f"{folder} holds neither {ADAPTER_CONFIG} (a PEFT adapter) nor {SHIRG_WEIGHTS}; "
                              "pass the adapter folder written by `shirg train`")
    if has_lora:
        from peft import PeftModel

        try:
            peft_model = PeftModel.from_pretrained(model, str(folder), is_trainable=False)
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(f"cannot apply the adapter in {folder} to this model: {e}") from e
        model = peft_model.base_model.model
    if has_shirg and shirg_weights:
        load_shirg_weights(model, folder / SHIRG_WEIGHTS)
    return model.eval()


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
    every non-weight file of ``source_dir`` (config, tokenizer) copied. Written to a temporary folder
    next to ``out_dir`` and renamed into place, so ``out_dir`` is complete or absent."""
    out = Path(out_dir)
    if out.exists():
        raise CheckpointError(f"{out} already exists; choose a new --out folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        state = {PREFIX + k: v.detach().cpu().contiguous() for k, v in model.model.state_dict().items()}
        shards: list[dict[str, torch.Tensor]] = [{}]
        size = 0
        for k, v in state.items():
            nbytes = v.numel() * v.element_size()
            if shards[-1] and size + nbytes > max_shard_bytes:
                shards.append({})
                size = 0
            shards[-1][k] = v
            size += nbytes
        if len(shards) == 1:
            save_file(shards[0], str(tmp / "model.safetensors"), metadata={"format": "pt"})
        else:
            weight_map = {}
            for i, shard in enumerate(shards, start=1):
                fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
                save_file(shard, str(tmp / fname), metadata={"format": "pt"})
                weight_map |= dict.fromkeys(shard, fname)
            total = sum(v.numel() * v.element_size() for v in state.values())
            (tmp / "model.safetensors.index.json").write_text(
                json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
        if source_dir is not None:
            for f in Path(source_dir).iterdir():
                if f.is_file() and not f.name.endswith(WEIGHT_FILES) and f.name != "model.safetensors.index.json":
                    shutil.copy2(f, tmp / f.name)
        config_path = tmp / "config.json"
        config = json.loads(config_path.read_text()) if config_path.is_file() else dict(model.config.raw)
        config["torch_dtype"] = str(model.dtype).removeprefix("torch.")
        config_path.write_text(json.dumps(config, indent=2))
        save_shirg_weights(model, tmp / SHIRG_WEIGHTS)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def export_merged(model_dir: str | Path, adapter_dir: str | Path | None, out_dir: str | Path,
                  dtype: str | torch.dtype | None = None, device: str = "cpu") -> Path:
    """Load base + adapter, merge LoRA into the base weights in fp32, write a plain LaViDa checkpoint
    in ``dtype`` (default: the base checkpoint's ``torch_dtype``, else float32)."""
    import shirg
    from shirg.checkpoint import read_config
    from shirg.model.loading import _dtype

    target = _dtype(dtype or read_config(model_dir).get("torch_dtype") or "float32", torch.device(device))
    model = shirg.load(model_dir, device=device, dtype=torch.float32)
    if adapter_dir is not None:
        model = apply_adapter(model, adapter_dir)
        merge_lora(model)
    return write_lavida_checkpoint(model.to(target), out_dir, source_dir=model_dir)
