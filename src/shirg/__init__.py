"""shirg: static, text-conditioned high-resolution token selection for LaViDa.

``shirg.load(folder)`` gives a :class:`shirg.model.LavidaModel`; ``model.answer(images, questions,
mode=...)`` answers. The rooms, lowest first: ``tokens`` (selection), ``vision`` (the tower),
``model`` (LaViDa-LLaDA, answering), ``entitygrid`` (the generated benchmark), then ``train``,
``evaluate``, ``bench`` and the ``commands`` of the CLI (docs/architecture.md).
"""

__version__ = "0.1.0"
__all__ = ["load", "__version__"]


def load(path, device="cpu", dtype=None, shirg_weights=None, adapter=None, weight_format=None, revision=None):
    """Load a LaViDa-LLaDA checkpoint folder, optionally with a trained adapter and quantized weights
    (``weight_format`` "float", "bf16", "int8" or "int4"); ``path`` may be a Hugging Face repo id
    (``revision`` picks its version; a local folder wins); see :func:`shirg.model.adapter.load_model`."""
    from shirg.model.adapter import load_model  # torch-backed: `import shirg` (and the CLI) stays fast

    return load_model(path, device=device, dtype=dtype, shirg_weights=shirg_weights, adapter=adapter,
                      weight_format=weight_format, revision=revision)
