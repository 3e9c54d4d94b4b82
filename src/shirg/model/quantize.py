"""Weight-only quantization of the LLaDA linears with torchao, applied at load time.

Formats (``weight_format``):

- ``float``: the weights stay in the model's compute dtype (no change).
- ``bf16``: the LLaDA linears hold bfloat16 weights; needs bfloat16 compute.
- ``int8``: torchao ``Int8WeightOnlyConfig`` (per-output-row symmetric int8, one scale per row);
  runs on CPU and CUDA in any float compute dtype. Its linear converts the int8 matrix to the
  activation dtype inside each call (no fused int8 kernel), so it saves memory, not necessarily time.
- ``int4``: group-wise asymmetric int4 (largest group of 128 / 64 / 32 dividing the input width),
  needs bfloat16 compute. CUDA: torchao ``Int4WeightOnlyConfig`` with the ``tile_packed_to_4d``
  (tinygemm) layout. CPU: torchao's ``PrototypeInt4WeightOnlyConfig`` (``Int4OpaqueTensor``, the
  ``_weight_int4pack_mm_for_cpu`` kernel). torchao's other int4 layouts have no CPU kernel.

What is quantized: every ``nn.Linear`` of the language model (the 32 blocks' seven projections and
the LM head ``ff_out``); the embedding, norms, vision tower, projector, SHIRG's coordinate embedding
and LoRA matrices stay in the compute dtype. A linear whose input width no group size divides
stays unquantized and is counted in :func:`quantize_model`'s report.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from shirg.errors import ConfigError, resolve_device, resolve_dtype

WEIGHT_FORMATS = ("float", "bf16", "int8", "int4")
INT4_GROUPS = (128, 64, 32)
BF16_FORMATS = ("bf16", "int4")  # formats whose kernels need bfloat16 activations

log = logging.getLogger(__name__)


def check_weight_format(weight_format: str | None) -> str:
    """The format name, or a ConfigError listing the valid ones."""
    fmt = weight_format or "float"
    if fmt not in WEIGHT_FORMATS:
        raise ConfigError(f"unknown weight format {fmt!r}; valid formats: {', '.join(WEIGHT_FORMATS)}")
    return fmt


def default_dtype(weight_format: str | None, dtype: torch.dtype | str | None) -> torch.dtype | str | None:
    """The compute dtype to load in: ``bf16`` / ``int4`` choose bfloat16 when no dtype is given."""
    if dtype in (None, "auto") and check_weight_format(weight_format) in BF16_FORMATS:
        return torch.bfloat16
    return dtype


def check_compatible(weight_format: str, dtype: torch.dtype, device: torch.device) -> None:
    """Fail before the load when the format has no kernel for this dtype/device."""
    fmt = check_weight_format(weight_format)
    if fmt in BF16_FORMATS and dtype != torch.bfloat16:
        raise ConfigError(
            f"{fmt} weights need bfloat16 compute (torchao's {fmt} linear kernels take bf16 activations), "
            f"got {dtype}; use --dtype bfloat16 or leave --dtype unset"
        )
    if fmt == "int4" and device.type not in ("cpu", "cuda"):
        raise ConfigError(f"int4 weights have a torchao kernel on cpu and cuda only, not on {device.type}")


def _torchao():
    """torchao's quantization API; its import logs warnings about optional CUDA extensions on CPU."""
    ao_log = logging.getLogger("torchao")
    level = ao_log.level
    ao_log.setLevel(logging.ERROR)
    try:
        import torchao.quantization as q
    except ImportError as e:  # pragma: no cover - torchao is a core dependency
        raise ConfigError(f"weight quantization needs torchao ({e}); pip install torchao") from e
    finally:
        ao_log.setLevel(level)
    return q


def llm_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """Fully qualified name -> linear, for every nn.Linear of the language model (LoRA's own
    ``lora_A`` / ``lora_B`` excluded; a LoRA-wrapped layer's ``base_layer`` included)."""
    core = model.model if hasattr(model, "model") and hasattr(model.model, "transformer") else model
    root = core.transformer
    out = {}
    for name, module in root.named_modules():
        if isinstance(module, nn.Linear) and "lora_" not in name:
            out[name] = module
    return out


def _int4_config(group: int, device: torch.device):
    q = _torchao()
    if device.type == "cuda":
        from torchao.quantization.quantize_.workflows.int4.int4_packing_format import Int4PackingFormat

        return q.Int4WeightOnlyConfig(group_size=group, int4_packing_format=Int4PackingFormat.TILE_PACKED_TO_4D)
    from torchao.prototype.quantization.int4.inference_workflow import PrototypeInt4WeightOnlyConfig

    return PrototypeInt4WeightOnlyConfig(group_size=group)


@torch.no_grad()
def quantize_model(model: nn.Module, weight_format: str) -> dict[str, Any]:
    """Quantize the language model's linears in place (see the module docstring).

    Returns a report: format, quantized / skipped layer counts, weight bytes of the whole model.
    """
    fmt = check_weight_format(weight_format)
    linears = llm_linears(model)
    device = next(iter(linears.values())).weight.device if linears else torch.device("cpu")
    dtype = model.dtype if hasattr(model, "dtype") else next(model.parameters()).dtype
    check_compatible(fmt, dtype, device)
    done, skipped = 0, []
    if fmt == "bf16":
        for lin in linears.values():
            lin.to(torch.bfloat16)
        done = len(linears)
    elif fmt in ("int8", "int4"):
        q = _torchao()
        by_config: dict[Any, list[nn.Linear]] = {}
        for name, lin in linears.items():
            if fmt == "int8":
                by_config.setdefault("int8", []).append(lin)
                continue
            group = next((g for g in INT4_GROUPS if lin.in_features % g == 0), None)
            if group is None:
                skipped.append(name)
            else:
                by_config.setdefault(group, []).append(lin)
        for key, mods in by_config.items():
            config = q.Int8WeightOnlyConfig() if key == "int8" else _int4_config(key, device)
            chosen = {id(m) for m in mods}
            # filter by identity: quantize_ walks the whole tree and calls filter_fn(module, fqn)
            q.quantize_(model, config, filter_fn=lambda m, _fqn, chosen=chosen: id(m) in chosen)
            done += len(mods)
    if skipped:
        log.warning("%d linear(s) stay unquantized (input width not a multiple of %s): %s",
                    len(skipped), "/".join(map(str, INT4_GROUPS)), ", ".join(skipped[:5]))
    return {"weight_format": fmt, "quantized_linears": done, "skipped_linears": len(skipped),
            "weight_bytes": weight_bytes(model)}


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a tensor holds, looking inside torchao's tensor subclasses (their inner data tensors)."""
    flatten = getattr(t, "__tensor_flatten__", None)
    if flatten is not None and type(t) not in (torch.Tensor, nn.Parameter):
        names, _ = flatten()
        return sum(tensor_bytes(getattr(t, n)) for n in names if getattr(t, n) is not None)
    return t.numel() * t.element_size()


def weight_bytes(module: nn.Module) -> int:
    """Bytes of every parameter and buffer (each shared tensor counted once)."""
    seen, total = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):
        if id(t) in seen:
            continue
        seen.add(id(t))
        total += tensor_bytes(t)
    return total


def resolve_load(weight_format: str | None, device: torch.device | str, dtype) -> torch.dtype:
    """The compute dtype a load with ``weight_format`` uses; fails early on a format without a kernel."""
    fmt = check_weight_format(weight_format)
    device = resolve_device(device)
    dtype = resolve_dtype(default_dtype(fmt, dtype), device)
    check_compatible(fmt, dtype, device)
    return dtype


def apply_weight_format(model: nn.Module, weight_format: str | None) -> nn.Module:
    """Quantize ``model`` (see :func:`quantize_model`) and record the format and report on it."""
    fmt = check_weight_format(weight_format)
    report = quantize_model(model, fmt) if fmt != "float" else {
        "weight_format": "float", "quantized_linears": 0, "skipped_linears": 0, "weight_bytes": weight_bytes(model)}
    model.weight_format = fmt
    model.weight_report = report
    return model
