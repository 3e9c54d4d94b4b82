"""The default high-resolution canvas of a checkpoint (no torch import: the CLI reads it early).

LaViDa's SHIRG encodes 672 x 672. A checkpoint trained for another canvas (the bundled small model:
336) says so with the optional config.json key ``shirg_resolution``; ``shirg answer``, ``eval``,
``demo`` and :func:`shirg.model.answer.answer` all take their default from here.
"""

from __future__ import annotations

from typing import Any

DEFAULT_RESOLUTION = 672
RESOLUTION_KEY = "shirg_resolution"


def canvas_resolution(config: dict[str, Any]) -> int:
    """``config``'s ``shirg_resolution`` when set, else :data:`DEFAULT_RESOLUTION`."""
    value = config.get(RESOLUTION_KEY)
    return int(value) if value else DEFAULT_RESOLUTION
