"""Applying a trained adapter at load time: PEFT LoRA layers (unmerged) and SHIRG weights.

Saving adapters and merging them into LaViDa checkpoints is training's business
(:mod:`shirg.train.adapter`); reading one is loading, so it lives here.
"""

from __future__ import annotations

from pathlib import Path

from shirg.checkpoint import check_floating, check_state_dict, read_safetensors_file, read_safetensors_metadata
from shirg.errors import CheckpointError, ConfigError
from shirg.model.lavida import LavidaModel
from shirg.model.loading import SHIRG_WEIGHTS, load, load_shirg_weights
from shirg.model.quantize import apply_weight_format, resolve_load
from shirg.options import HEAD_INPUTS, TEXT_POOLS
from shirg.safety import ADAPTER_WEIGHTS, check_adapter_folder
from shirg.tokens.relevance_head import RelevanceHead

ADAPTER_CONFIG = "adapter_config.json"
RELEVANCE_HEAD = "relevance_head.safetensors"  # a learned relevance head (shirg.tokens.relevance_head)


def head_widths(model: LavidaModel, reads: str) -> tuple[int, int]:
    """(token map's input width, question map's input width) of a relevance head for ``model`` that
    reads ``reads``: the tower's width or the LLM's for the tokens, the LLM's for the question."""
    width = model.config.llm.d_model
    return (model.config.mm_hidden_size if reads == "tower" else width), width


def load_relevance_head(model: LavidaModel, path: str | Path) -> RelevanceHead:
    """Read a relevance head written by ``shirg train`` (safetensors) and attach it to ``model``
    (float32, on the model's device): SHIRG's score then adds its term. The file's ``reads`` metadata
    says what the head reads (``projected`` when absent), its ``pool`` how it pools the question
    (``max`` when absent)."""
    path = Path(path)
    state = read_safetensors_file(path)
    check_floating(state, path)
    meta = read_safetensors_metadata(path)
    reads, pool = meta.get("reads", "projected"), meta.get("pool", "max")
    if reads not in HEAD_INPUTS:
        raise CheckpointError(f"{path}: the relevance head reads {reads!r}, not one of {', '.join(HEAD_INPUTS)}")
    if pool not in TEXT_POOLS:
        raise CheckpointError(f"{path}: the relevance head pools by {pool!r}, not one of {', '.join(TEXT_POOLS)}")
    token, text = state.get("token.weight"), state.get("text.weight")
    if token is None or token.ndim != 2 or text is None or text.ndim != 2:
        raise CheckpointError(f"{path} is not a relevance head (no 2-D token.weight and text.weight)")
    rank, dim = token.shape
    want, width = head_widths(model, reads)
    what = "the tower's features" if reads == "tower" else "the projected tokens"
    if dim != want or text.shape[1] != width:
        raise CheckpointError(f"{path}: the relevance head reads {dim}-dim tokens ({what}) and {text.shape[1]}-dim "
                              f"question embeddings; this model's are {want}-dim and {width}-dim; pass the adapter "
                              "trained on this base checkpoint")
    head = RelevanceHead(int(dim), int(rank), text_dim=width, reads=reads, pool=pool)
    expected = {k: v.shape for k, v in head.state_dict().items()}
    check_state_dict(expected, {k: v.shape for k, v in state.items()}, "relevance head", path)
    head.load_state_dict({k: v.float() for k, v in state.items()})
    model.relevance_head = head.to(model.device).eval().requires_grad_(False)
    return model.relevance_head


def load_model(path, device="cpu", dtype=None, shirg_weights=None, adapter=None, weight_format=None,
               revision=None) -> LavidaModel:
    """Load a LaViDa-LLaDA checkpoint folder (:func:`shirg.model.loading.load`) and apply ``adapter``.

    ``adapter``: a folder written by ``shirg train`` (PEFT LoRA adapter and/or
    ``shirg_weights.safetensors`` and/or ``relevance_head.safetensors``); its LoRA layers are
    applied unmerged, its SHIRG weights loaded (an explicit ``shirg_weights`` file wins) and its
    relevance head attached. A ``.safetensors`` file is plain SHIRG
    weights, the same as ``shirg_weights`` (passing both is an error).

    ``weight_format``: "float" (default), "bf16", "int8" or "int4": the language model's linears are
    quantized with torchao after loading and after the adapter (:mod:`shirg.model.quantize`); "bf16"
    and "int4" load in bfloat16 when no ``dtype`` is given.
    """
    if adapter is not None and shirg_weights is not None and Path(adapter).is_file():
        raise ConfigError(f"adapter {adapter} is a SHIRG weights file and shirg_weights is given too; pass one of them")
    quantized = weight_format not in (None, "float")
    if quantized:
        dtype = resolve_load(weight_format, device, dtype)  # fails before the load on a format without kernel
    model = load(path, device=device, dtype=dtype, shirg_weights=shirg_weights, revision=revision)
    if adapter is not None:
        model = apply_adapter(model, adapter, shirg_weights=shirg_weights is None)
    return apply_weight_format(model, weight_format) if quantized else model


def apply_adapter(model: LavidaModel, adapter_dir: str | Path, shirg_weights: bool = True) -> LavidaModel:
    """Put a saved adapter's LoRA layers into ``model`` (unmerged, inference only) and load the
    folder's SHIRG weights when present. Returns the same LavidaModel, LoRA layers inside.

    ``adapter_dir`` may also be a ``.safetensors`` file: plain SHIRG weights (no LoRA), loaded
    when ``shirg_weights`` is true."""
    folder = Path(adapter_dir)
    if folder.is_file():
        if folder.suffix != ".safetensors":
            raise CheckpointError(f"adapter {folder} is a file but not .safetensors; pass the adapter folder "
                                  f"written by `shirg train` or a SHIRG weights file ({SHIRG_WEIGHTS})")
        if shirg_weights:
            load_shirg_weights(model, folder)
        return model.eval()
    if not folder.is_dir():
        raise CheckpointError(f"adapter folder {folder} does not exist")
    has_lora = (folder / ADAPTER_CONFIG).is_file()
    has_shirg = (folder / SHIRG_WEIGHTS).is_file()
    has_head = (folder / RELEVANCE_HEAD).is_file()
    if not has_lora and not has_shirg and not has_head:
        raise CheckpointError(f"{folder} holds neither {ADAPTER_CONFIG} (a PEFT adapter), {SHIRG_WEIGHTS} nor "
                              f"{RELEVANCE_HEAD}; pass the adapter folder written by `shirg train`")
    if has_lora:
        from peft import PeftModel

        check_adapter_folder(folder)  # safetensors weights only: PEFT never unpickles adapter_model.bin
        read_safetensors_file(folder / ADAPTER_WEIGHTS)  # a corrupt or truncated file: one clear error
        try:
            peft_model = PeftModel.from_pretrained(model, str(folder), is_trainable=False)
        except Exception as e:  # noqa: BLE001 - PEFT and safetensors raise many types for a bad adapter
            raise CheckpointError(f"cannot apply the adapter in {folder} to this model: "
                                  f"{' '.join(str(e).split())[:300]}") from e
        model = peft_model.base_model.model
    if has_shirg and shirg_weights:
        load_shirg_weights(model, folder / SHIRG_WEIGHTS)
    if has_head:
        load_relevance_head(model, folder / RELEVANCE_HEAD)
    return model.eval()
