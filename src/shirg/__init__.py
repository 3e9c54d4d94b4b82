"""shirg: static, text-conditioned high-resolution token selection for LaViDa."""

__version__ = "0.1.0"


def example_image() -> str:
    """Path of the bundled example chart (a synthetic 1000 x 800 bar chart)."""
    from importlib.resources import files

    return str(files("shirg") / "assets" / "example_chart.png")


def load(path, device="cpu", dtype=None, shirg_weights=None):
    """Load a LaViDa-LLaDA checkpoint folder; see :func:`shirg.model.loading.load`."""
    from shirg.model.loading import load as _load

    return _load(path, device=device, dtype=dtype, shirg_weights=shirg_weights)
