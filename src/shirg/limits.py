"""Input limits and argument validators shared by the CLI, the loaders and the trainer.

Every value a user (or a file they were sent) can hand us is checked here against a documented
limit before any costly work, and a bad one raises :class:`~shirg.errors.ConfigError` /
:class:`~shirg.errors.ImageError` (one line, exit code 2 in the CLI).

Limits (defaults; see README "Security"):

- ``MAX_IMAGE_PIXELS`` (40 megapixels): width x height read from the image header, checked before
  the pixels are decoded. LaViDa's largest canvas is 1152 x 384 (anyres pinpoints) and SHIRG's is
  672 x 672 (0.45 MP), so ordinary photos and 300-dpi page scans fit with room to spare, while a
  small compressed file that would expand to gigabytes is refused. Raise it with
  ``--max-image-pixels N`` or the environment variable ``SHIRG_MAX_IMAGE_PIXELS``.
- ``MAX_IMAGE_BYTES`` (64 MiB): the image file's size on disk (``--max-image-bytes`` /
  ``SHIRG_MAX_IMAGE_BYTES``).
- ``MAX_JSON_BYTES`` (16 MiB): a checkpoint's config.json, tokenizer_config.json and safetensors
  index (``SHIRG_MAX_JSON_BYTES``); the real LaViDa index is about 100 KB.
- ``MAX_QUESTION_CHARS`` (8192): one question (``SHIRG_MAX_QUESTION_CHARS``).
- Canvas resolution: a multiple of 14 from ``MIN_RESOLUTION`` (28, a 2 x 2 patch grid) to
  ``MAX_RESOLUTION`` (4032).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any

from shirg.errors import CheckpointError, ConfigError, ImageError

MAX_IMAGE_PIXELS = 40_000_000
MAX_IMAGE_BYTES = 64 * 2**20
MAX_JSON_BYTES = 16 * 2**20
MAX_QUESTION_CHARS = 8192
MIN_RESOLUTION = 28
MAX_RESOLUTION = 4032
PATCH = 14  # SigLIP's patch side; the vision room and the canvas checks share this one value
NATIVE_RESOLUTION = 384  # SigLIP so400m's own size; its conv drops the last 6 pixels (27 x 27 patches)
MAX_SEED = 2**63 - 1

ENV = {
    "image_pixels": "SHIRG_MAX_IMAGE_PIXELS",
    "image_bytes": "SHIRG_MAX_IMAGE_BYTES",
    "json_bytes": "SHIRG_MAX_JSON_BYTES",
    "question_chars": "SHIRG_MAX_QUESTION_CHARS",
}
DEFAULTS = {
    "image_pixels": MAX_IMAGE_PIXELS,
    "image_bytes": MAX_IMAGE_BYTES,
    "json_bytes": MAX_JSON_BYTES,
    "question_chars": MAX_QUESTION_CHARS,
}
_overrides: dict[str, int] = {}


def limit(name: str) -> int:
    """The current value of limit ``name``: set_limit() > environment variable > default."""
    if name in _overrides:
        return _overrides[name]
    raw = os.environ.get(ENV[name])
    if raw is None or not raw.strip():
        return DEFAULTS[name]
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {ENV[name]}={raw!r} must be a positive integer") from None
    if value < 1:
        raise ConfigError(f"environment variable {ENV[name]}={raw!r} must be a positive integer")
    return value


def set_limit(name: str, value: int | None) -> None:
    """Override limit ``name`` for this process (None: back to environment / default)."""
    if name not in DEFAULTS:
        raise KeyError(name)
    if value is None:
        _overrides.pop(name, None)
    else:
        _overrides[name] = int(value)


# ---------------------------------------------------------------------------------------------------
# images


def check_image_file(path: Path) -> None:
    """A path that is an existing regular file no larger than the byte limit."""
    if path.is_dir():
        raise_image(f"image {path} is a folder, not an image file")
    if not path.is_file():
        raise_image(f"image {path} does not exist")
    size = path.stat().st_size
    if size > limit("image_bytes"):
        raise_image(f"image {path} is {size} bytes, over the limit of {limit('image_bytes')} bytes; "
                    f"raise it with --max-image-bytes or {ENV['image_bytes']} if the file is trusted")


def check_image_pixels(width: int, height: int, where: str = "image") -> None:
    """Width x height (from the header, before decoding) within the pixel limit."""
    cap = limit("image_pixels")
    if width * height > cap:
        raise_image(f"{where} is {width} x {height} = {width * height} pixels, over the limit of {cap}; "
                    f"raise it with --max-image-pixels or {ENV['image_pixels']} if the image is trusted")


def raise_image(message: str):
    raise ImageError(message)


# ---------------------------------------------------------------------------------------------------
# text


def check_text(text: Any, what: str = "the question") -> str:
    """User text: a str that encodes as UTF-8 (no lone surrogates from undecodable bytes) and is not
    longer than the question limit. Returns it unchanged."""
    if not isinstance(text, str):
        raise ConfigError(f"{what} must be text, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"{what} is not valid UTF-8 text; pass it in UTF-8") from None
    if len(text) > limit("question_chars"):
        raise ConfigError(f"{what} has {len(text)} characters, over the limit of {limit('question_chars')} "
                          f"({ENV['question_chars']} raises it)")
    return text


# ---------------------------------------------------------------------------------------------------
# JSON metadata files of a checkpoint folder


def read_json_file(path: str | Path, what: str = "", kind: type = dict) -> Any:
    """A small JSON file (config.json, index, tokenizer config) that must hold a ``kind`` (dict by
    default); CheckpointError when too large, not UTF-8, not JSON or of the wrong type."""
    path = Path(path)
    what = what or str(path)
    size = path.stat().st_size
    if size > limit("json_bytes"):
        raise CheckpointError(f"{what} is {size} bytes, over the limit of {limit('json_bytes')} for a JSON "
                              f"metadata file ({ENV['json_bytes']} raises it)")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{what} is not UTF-8 text ({e.reason} at byte {e.start}); re-download or "
                              "rewrite it") from e
    except (json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f"{what} is not valid JSON ({e}); re-download or rewrite it") from e
    if not isinstance(data, kind):
        raise CheckpointError(f"{what} must hold a JSON {'object' if kind is dict else kind.__name__}, "
                              f"got {type(data).__name__}")
    return data


# ---------------------------------------------------------------------------------------------------
# argparse types: they raise ArgumentTypeError, which the CLI prints as one line (exit code 2)


def _number(text: str, cast):
    try:
        value = cast(text)
    except (TypeError, ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a {'number' if cast is float else 'whole number'}") \
            from None
    return value


def finite_float(text: str) -> float:
    value = _number(text, float)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def non_negative_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return value


def positive_int(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number >= 1")
    return value


def non_negative_int(text: str) -> int:
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number >= 0")
    return value


def seed_int(text: str) -> int:
    value = _number(text, int)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number from 0 to 2**63 - 1")
    return value


def resolution_int(text: str) -> int:
    value = _number(text, int)
    check_canvas_resolution(value, argparse.ArgumentTypeError)
    return value


def check_canvas_resolution(value: int, error: type[Exception] = ConfigError) -> int:
    """A canvas side: SigLIP's native 384, or a multiple of 14 in [MIN_RESOLUTION, MAX_RESOLUTION]."""
    if value == NATIVE_RESOLUTION:
        return value
    if value % PATCH or not MIN_RESOLUTION <= value <= MAX_RESOLUTION:
        near = min(MAX_RESOLUTION, max(MIN_RESOLUTION, round(value / PATCH) * PATCH))
        why = "is not a multiple of the patch size" if value % PATCH else "is out of range for"
        raise error(f"resolution {value} {why} {PATCH}: the canvas side must be a multiple of {PATCH} from "
                    f"{MIN_RESOLUTION} (a 2 x 2 patch grid) to {MAX_RESOLUTION}, or the native "
                    f"{NATIVE_RESOLUTION}; try {near}")
    return value


def name_list(text: str) -> list[str]:
    """A comma-separated list of at least one non-empty name."""
    names = [n.strip() for n in text.split(",")]
    if not any(names):
        raise argparse.ArgumentTypeError(f"{text!r} names nothing; give one or more names, comma-separated")
    if not all(names):
        raise argparse.ArgumentTypeError(f"{text!r} has an empty name between commas")
    return names


def names_text(text: str) -> str:
    """An argparse type: ``text`` unchanged once it names at least one thing and no empty one."""
    name_list(text)
    return text


def finite_floats(values, what: str) -> tuple[float, ...]:
    """Every value finite (a ConfigError naming ``what`` otherwise)."""
    values = tuple(values)
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        raise ConfigError(f"{what} must be finite numbers, got {', '.join(str(v) for v in values)}")
    return values


def add_limit_options(p: argparse.ArgumentParser) -> None:
    """--max-image-pixels / --max-image-bytes (defaults: environment, else the built-in limits)."""
    g = p.add_argument_group("input limits")
    g.add_argument("--max-image-pixels", type=positive_int, default=None, metavar="N",
                   help=f"refuse images with more pixels (default {MAX_IMAGE_PIXELS}, or {ENV['image_pixels']})")
    g.add_argument("--max-image-bytes", type=positive_int, default=None, metavar="N",
                   help=f"refuse larger image files (default {MAX_IMAGE_BYTES}, or {ENV['image_bytes']})")


def reset_limits() -> None:
    """Drop every per-process override (the CLI calls it when a command ends)."""
    _overrides.clear()


def apply_limit_options(args: argparse.Namespace) -> None:
    if getattr(args, "max_image_pixels", None):
        set_limit("image_pixels", args.max_image_pixels)
    if getattr(args, "max_image_bytes", None):
        set_limit("image_bytes", args.max_image_bytes)
