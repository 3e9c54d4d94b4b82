"""shirg: static, text-conditioned high-resolution token selection for LaViDa.

``shirg.load(folder)`` gives a :class:`shirg.model.LavidaModel`; ``model.answer(images, questions,
mode=...)`` answers. The rooms, lowest first: ``tokens`` (selection), ``vision`` (the tower),
``model`` (LaViDa-LLaDA, answering), ``entitygrid`` (the generated benchmark), then ``train``,
``evaluate``, ``bench`` and the ``commands`` of the CLI (docs/architecture.md).
"""

__version__ = "0.1.0"
__all__ = ["load", "__version__"]


def load(path, device="cpu", dtype=None, shirg_weights=None, adapter=None, weight_format=None):
    """Load a LaViDa-LLaDA checkpoint folder, optionally with a trained adapter; see
    :func:`shirg.model.adapter.load_model`.

    ``weight_format``: "float" (default), "bf16", "int8" or "int4": the language model's linears
    are quantized with torchao after loading (see :mod:`shirg.model.quantize`); "bf16" and "int4"
    load in bfloat16 when no ``dtype`` is given.
    """
    from shirg.model.adapter import load_model  # torch-backed: `import shirg` (and the CLI) stays fast

    if weight_format not in (None, "float"):
        from shirg.model.quantize import resolve_load

        dtype = resolve_load(weight_format, device, dtype)  # fails before the load on a format without kernel
    model = load_model(path, device=device, dtype=dtype, shirg_weights=shirg_weights, adapter=adapter)
    if weight_format not in (None, "float"):
        from shirg.model.quantize import apply_weight_format

        model = apply_weight_format(model, weight_format)
    return model
