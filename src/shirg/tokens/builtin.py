"""Imports every built-in strategy by name, so each registers itself (the registry imports none).

The order of the imports is the order of ``MODES``: SHIRG first, then the baselines.
"""

# isort: off
from shirg.tokens import shirg  # noqa: F401
from shirg.tokens import baselines  # noqa: F401

# isort: on

__all__ = ["baselines", "shirg"]
