"""Request inputs: OpenAI chat messages -> (image, question), images from base64 data URLs only.

Nothing here reads a file or fetches a URL: an ``image_url`` must be a ``data:image/...;base64,``
URL, within the byte and pixel limits. Every problem raises :class:`RequestError` (status, one-line
message, the offending parameter), which the app answers as a 4xx JSON error.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from shirg.serve.schemas import ChatCompletionRequest
from shirg.vision.preprocess import load_image

# decoders a request may use (Pillow's others, e.g. EPS or the raw/SGI family, are never tried)
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
_WHITESPACE = re.compile(rb"\s+")


class RequestError(Exception):
    """A bad request: HTTP ``status`` with an OpenAI-style error body."""

    def __init__(self, message: str, status: int = 400, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message, self.status, self.param, self.code = message, status, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 16 * 2**20
    max_image_bytes: int = 8 * 2**20
    max_pixels: int = 4096 * 4096
    max_question_chars: int = 2000
    max_tokens: int = 256  # answer slots a request may ask for


def decode_image(url: object, limits: Limits, param: str = "image_url") -> Image.Image:
    """A base64 ``data:image/...`` URL -> 8-bit RGB PIL image, or a RequestError."""
    if not isinstance(url, str) or not url:
        raise RequestError("image_url.url must be a base64 data URL (data:image/png;base64,...)", param=param)
    if not url.startswith("data:"):
        what = "remote image URLs are not fetched" if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", url) else \
            "file paths are not read"
        raise RequestError(f"{what}; send the image inline as a base64 data URL (data:image/png;base64,...)",
                           param=param, code="unsupported_image_url")
    header, sep, payload = url.partition(",")
    media = header[5:].split(";")
    if not sep or "base64" not in media[1:]:
        raise RequestError("the data URL is not base64 (expected data:image/<type>;base64,<data>)", param=param)
    if media[0] and not media[0].startswith("image/"):
        raise RequestError(f"the data URL's media type {media[0]!r} is not an image", param=param)
    # base64 is 4/3 of the bytes: refuse an oversized payload before decoding it
    if len(payload) > (limits.max_image_bytes + 2) // 3 * 4 + 1024:
        raise RequestError(f"the image is larger than the server's limit of {limits.max_image_bytes} bytes",
                           status=413, param=param, code="image_too_large")
    try:
        raw = base64.b64decode(_WHITESPACE.sub(b"", payload.encode("ascii")), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as e:
        raise RequestError(f"the image's base64 data cannot be decoded ({e})", param=param, code="bad_base64") from e
    if len(raw) > limits.max_image_bytes:
        raise RequestError(f"the image has {len(raw)} bytes, over the server's limit of {limits.max_image_bytes}",
                           status=413, param=param, code="image_too_large")
    if not raw:
        raise RequestError("the image data is empty", param=param, code="not_an_image")
    try:
        img = Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS)
        w, h = img.size  # read from the header, before any pixel is decoded
        if w * h > limits.max_pixels:
            raise RequestError(f"the image is {w} x {h} = {w * h} pixels, over the server's limit of "
                               f"{limits.max_pixels}", status=413, param=param, code="image_too_large")
        img.load()
        return load_image(img)
    except RequestError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise RequestError(f"the data is not a readable {'/'.join(IMAGE_FORMATS)} image ({type(e).__name__})",
                           param=param, code="not_an_image") from e
    except Exception as e:  # noqa: BLE001 - a hostile file may trip any decoder error
        raise RequestError(f"the image cannot be decoded ({type(e).__name__})", param=param,
                           code="not_an_image") from e


def check_question(question: str, limits: Limits, param: str = "messages") -> str:
    if not question.strip():
        raise RequestError("the question is empty; ask something about the image", param=param,
                           code="empty_question")
    if len(question) > limits.max_question_chars:
        raise RequestError(f"the question has {len(question)} characters, over the limit of "
                           f"{limits.max_question_chars}", param=param, code="question_too_long")
    return question.strip()


UNSUPPORTED = ("tools", "functions", "tool_choice", "function_call", "response_format", "logit_bias", "audio")


def parse_chat(req: ChatCompletionRequest, limits: Limits) -> tuple[Image.Image, str]:
    """The single user turn's image and question. System messages are accepted and not used."""
    if req.stream:
        raise RequestError("streaming is not supported; send stream=false", param="stream")
    if req.n not in (None, 1):
        raise RequestError("n must be 1: one answer per request", param="n")
    extra = req.model_extra or {}
    for name in UNSUPPORTED:
        if extra.get(name):
            raise RequestError(f"{name} is not supported by this server", param=name)
    users = [m for m in req.messages if m.role == "user"]
    others = {m.role for m in req.messages} - {"user", "system", "developer"}
    if others:
        raise RequestError(f"only one user turn is answered (single-turn); got {', '.join(sorted(others))} "
                           "messages", param="messages")
    if len(users) != 1:
        raise RequestError(f"send exactly one user message with one image and the question; got {len(users)}",
                           param="messages")
    content = users[0].content
    texts: list[str] = []
    urls: list[object] = []
    if isinstance(content, str):
        texts.append(content)
    else:
        for i, part in enumerate(content or []):
            kind = part.get("type")
            if kind == "text":
                text = part.get("text")
                if not isinstance(text, str):
                    raise RequestError(f"content part {i}: text must be a string", param="messages")
                texts.append(text)
            elif kind == "image_url":
                ref = part.get("image_url")
                urls.append(ref.get("url") if isinstance(ref, dict) else ref)
            else:
                raise RequestError(f"content part {i}: type {kind!r} is not supported (text, image_url)",
                                   param="messages")
    if len(urls) != 1:
        raise RequestError(f"the user message needs exactly one image_url part; got {len(urls)}",
                           param="messages", code="image_required" if not urls else "too_many_images")
    question = check_question("\n".join(texts), limits)
    return decode_image(urls[0], limits), question


def image_data_url(img: Image.Image | bytes, mime: str = "image/png") -> str:
    """A PIL image (saved as PNG) or encoded bytes -> a base64 data URL."""
    if isinstance(img, Image.Image):
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        img = buf.getvalue()
    return f"data:{mime};base64,{base64.b64encode(img).decode('ascii')}"
