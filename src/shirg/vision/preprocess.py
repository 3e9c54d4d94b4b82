"""Image loading and SigLIP preprocessing (RGB, bicubic, scale 1/255, mean = std = 0.5)."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from shirg.errors import ConfigError, ImageError
from shirg.limits import NATIVE_RESOLUTION, PATCH, check_image_file, check_image_pixels, limit

MEAN = STD = (0.5, 0.5, 0.5)
PAD_COLOUR = (127, 127, 127)  # LaViDa's mean colour for square padding
RESIZE_MODES = ("pad", "squash")


def load_image(image: str | Path | Image.Image) -> Image.Image:
    """Open an image from a path or PIL image and return it as 8-bit RGB.

    Grey, palette and 16-bit images are converted; transparency is composited over white.
    """
    if isinstance(image, Image.Image):
        img = image
    else:
        path = Path(image)
        check_image_file(path)  # exists, is a file, within the byte limit
        cap = limit("image_pixels")
        if Image.MAX_IMAGE_PIXELS is not None and cap > Image.MAX_IMAGE_PIXELS:
            Image.MAX_IMAGE_PIXELS = cap  # PIL's own bomb check never undercuts a limit the user raised
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our limit is checked next
                img = Image.open(path)  # lazy: reads the header only
            check_image_pixels(*img.size, where=f"image {path}")  # before the pixels are decoded
            img.load()
        except Image.DecompressionBombError as e:
            raise ImageError(f"image {path} is too large to decode safely ({e}); raise --max-image-pixels "
                             "if the image is trusted") from e
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as e:
            raise ImageError(f"cannot read image {path}: {e}; is it a valid PNG/JPEG file?") from e
    if img.width == 0 or img.height == 0:
        raise ImageError(f"image has zero size {img.size}")
    check_image_pixels(*img.size)  # a PIL image handed in directly (the server, lmms-eval) too
    try:
        return _to_rgb(img)
    except (OSError, ValueError, SyntaxError, EOFError) as e:  # a lazily opened image that fails to decode
        raise ImageError(f"cannot decode the image: {e}; is it a valid PNG/JPEG file?") from e


def open_image_bytes(data: bytes, where: str) -> Image.Image:
    """An image from bytes (a parquet cell, an upload) as 8-bit RGB, under the same limits as a file."""
    if len(data) > limit("image_bytes"):
        raise ImageError(f"{where}: the image is {len(data)} bytes, over the limit of {limit('image_bytes')}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # load_image checks our limit
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise ImageError(f"{where}: the image is too large to decode safely ({e})") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as e:
        raise ImageError(f"{where}: cannot read the image ({e})") from e
    return load_image(img)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        scale = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / scale * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


@dataclass
class PreparedImage:
    """pixels [3, R, R] normalized; content_box (x0, y0, x1, y1) of the image in [0, 1] of the canvas."""

    pixels: torch.Tensor
    content_box: tuple[float, float, float, float]
    original_size: tuple[int, int]


def check_resolution(resolution: int) -> int:
    """R must be a positive multiple of 14, or SigLIP's native 384."""
    if resolution == NATIVE_RESOLUTION:
        return resolution
    if resolution <= 0 or resolution % PATCH:
        raise ConfigError(
            f"resolution {resolution} is not a positive multiple of the patch size {PATCH} "
            f"(nor the native {NATIVE_RESOLUTION}); "
            f"try {max(PATCH, round(resolution / PATCH) * PATCH)}"
        )
    return resolution


def to_tensor(img: Image.Image) -> torch.Tensor:
    """8-bit RGB PIL image -> [3, H, W] float, normalized with mean = std = 0.5."""
    arr = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    return (arr - mean) / std


def prepare_image(
    image: str | Path | Image.Image, resolution: int = 672, resize: str = "pad"
) -> PreparedImage:
    """Resize to R x R (bicubic) keeping the aspect and padding centred, or squashing."""
    check_resolution(resolution)
    if resize not in RESIZE_MODES:
        raise ConfigError(f"unknown resize mode {resize!r}; choose one of {', '.join(RESIZE_MODES)}")
    img = load_image(image)
    w, h = img.size
    if resize == "squash":
        canvas = img.resize((resolution, resolution), Image.BICUBIC)
        box = (0.0, 0.0, 1.0, 1.0)
    else:
        scale = resolution / max(w, h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        canvas = Image.new("RGB", (resolution, resolution), PAD_COLOUR)
        x0, y0 = (resolution - nw) // 2, (resolution - nh) // 2
        canvas.paste(img.resize((nw, nh), Image.BICUBIC), (x0, y0))
        box = (x0 / resolution, y0 / resolution, (x0 + nw) / resolution, (y0 + nh) / resolution)
    return PreparedImage(pixels=to_tensor(canvas), content_box=box, original_size=(w, h))
