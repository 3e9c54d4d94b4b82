"""Errors that carry a message meant for the person running the code.

Every user-facing failure (bad arguments, missing files, wrong shapes) raises a subclass of
:class:`ShirgError` whose message says what was wrong and what to do. The CLI prints the message
on one line and exits with status 2 instead of showing a traceback.
"""

from __future__ import annotations


class ShirgError(Exception):
    """Base class for errors whose message is meant for the user."""


class ConfigError(ShirgError, ValueError):
    """An option or argument has an invalid value."""


class CheckpointError(ShirgError):
    """A checkpoint folder is missing files, keys or has tensors of the wrong shape."""


class ImageError(ShirgError):
    """An image could not be read or decoded."""
