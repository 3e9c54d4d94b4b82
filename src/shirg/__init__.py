"""shirg: static, text-conditioned high-resolution token selection for LaViDa."""

__version__ = "0.1.0"


def load(path, device="cpu", dtype=None, shirg_weights=None, adapter=None):
    """Load a LaViDa-LLaDA checkpoint folder; see :func:`shirg.model.loading.load`.

    ``adapter``: a folder written by ``shirg train`` (PEFT LoRA adapter and/or
    ``shirg_weights.safetensors``); its LoRA layers are applied unmerged and its SHIRG weights
    loaded (an explicit ``shirg_weights`` file wins). A ``.safetensors`` file is plain SHIRG
    weights, the same as ``shirg_weights`` (passing both is an error).
    """
    from pathlib import Path

    from shirg.model.loading import load as _load

    if adapter is not None and shirg_weights is not None and Path(adapter).is_file():
        from shirg.errors import ConfigError

        raise ConfigError(f"adapter {adapter} is a SHIRG weights file and shirg_weights is given too; pass one of them")

    model = _load(path, device=device, dtype=dtype, shirg_weights=shirg_weights)
    if adapter is not None:
        from shirg.train.adapter import apply_adapter

        model = apply_adapter(model, adapter, shirg_weights=shirg_weights is None)
    return model
