"""shirg: static, text-conditioned high-resolution token selection for LaViDa."""

__version__ = "0.1.0"


def load(path, device="cpu", dtype=None, shirg_weights=None, adapter=None):
    """Load a LaViDa-LLaDA checkpoint folder; see :func:`shirg.model.loading.load`.

    ``adapter``: a folder written by ``shirg train`` (PEFT LoRA adapter and/or
    ``shirg_weights.safetensors``); its LoRA layers are applied unmerged and its SHIRG weights
    loaded (an explicit ``shirg_weights`` file wins).
    """
    from shirg.model.loading import load as _load

    model = _load(path, device=device, dtype=dtype, shirg_weights=shirg_weights)
    if adapter is not None:
        from shirg.train.adapter import apply_adapter

        model = apply_adapter(model, adapter, shirg_weights=shirg_weights is None)
    return model
