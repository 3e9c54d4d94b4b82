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


def resolve_device(device) -> torch.device:  # noqa: F821 - torch imported lazily
    """A torch.device for ``device``, or a ConfigError when it is malformed or not available here."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} was asked for but CUDA is not available here; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type not in ("cpu", "mps"):  # "meta" holds no data: nothing could run on it
        raise ConfigError(f"device type {dev.type!r} is not supported; use cpu or cuda")
    return dev


DTYPE_NAMES = ("float32", "fp32", "bfloat16", "bf16", "float16", "fp16", "auto")


def resolve_dtype(dtype, device) -> torch.dtype:  # noqa: F821 - torch imported lazily
    """A torch dtype from a name (or dtype); None / "auto" = bf16 on CUDA, fp32 elsewhere."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise ConfigError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPE_NAMES)}")
    return table[dtype]
