"""The models behind the server, and how a request's settings become one model call.

A request resolves to a :class:`Settings` (mode, generation and selection settings); equal
settings are the micro-batcher's key, so only requests that would run the very same call
together are batched. Sampled requests (temperature > 0) always run alone: their random draws
would otherwise depend on the other requests in the batch.
"""

from __future__ import annotations

import ctypes
import dataclasses
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

import shirg
from shirg.canvas import canvas_resolution
from shirg.errors import ConfigError, ShirgError
from shirg.model.options import VisualOptions
from shirg.model.sampler import SCHEDULES, num_transfer_tokens
from shirg.options import check_score_source
from shirg.serve.inputs import Limits, RequestError
from shirg.serve.schemas import ShirgSettings
from shirg.vision.overlay import draw_overlay
from shirg.vision.preprocess import load_image

log = logging.getLogger(__name__)

MODEL_PREFIX = "shirg"


def model_id(mode: str) -> str:
    """The API's model name of a mode: ``shirg`` for SHIRG, ``shirg:<mode>`` for the others."""
    return MODEL_PREFIX if mode == "shirg" else f"{MODEL_PREFIX}:{mode}"


@dataclass(frozen=True)
class Settings:
    """Everything that decides a model call apart from its images and questions (hashable)."""

    mode: str
    gen_length: int
    steps: int
    block_length: int
    temperature: float
    schedule: str
    seed: int
    options: tuple  # VisualOptions fields, as a tuple

    def generation(self) -> dict[str, Any]:
        return dict(gen_length=self.gen_length, steps=self.steps, block_length=self.block_length,
                    temperature=self.temperature, schedule=self.schedule, seed=self.seed)


@dataclass
class Defaults:
    gen_length: int = 20
    steps: int = 10
    block_length: int = 20
    schedule: str = "uniform"
    kv_cache: str = "native"


class Engine:
    """Loaded models by mode; ``run`` answers a batch of (image, question) with one settings."""

    def __init__(self, models: dict[str, Any], options, defaults: Defaults, limits: Limits,
                 description: str = "") -> None:
        if not models:
            raise ConfigError("no modes to serve; e.g. --modes lowres,full,shirg")
        self.models = models
        self.modes = list(models)
        self.options = options  # the server's VisualOptions (resolution, K, score ... defaults)
        self.defaults = defaults
        self.limits = limits
        self.description = description

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, model_dir: str | Path, adapter: str | None, modes: Sequence[str], options=None,
             defaults: Defaults | None = None, limits: Limits | None = None, device="cpu", dtype=None) -> Engine:
        """``shirg`` answers with the adapter (when given); the other modes with the plain model.

        ``options``: the server's default VisualOptions (default: the checkpoint's canvas, K = G*G/3).
        """
        base = shirg.load(model_dir, device=device, dtype=dtype)
        if options is None:
            options = VisualOptions(resolution=canvas_resolution(base.config.raw))
        for m in modes:
            options.validate(m)
        adapted = shirg.load(model_dir, device=device, dtype=dtype, adapter=adapter) if adapter else base
        if "shirg" in modes:
            check_score_source(adapted, options.score)
        models = {m: (adapted if m == "shirg" else base) for m in modes}
        for m in models.values():
            m.eval()
        text = f"{model_dir}" + (f" (shirg mode with adapter {adapter})" if adapter else "")
        return cls(models, options, defaults or Defaults(), limits or Limits(), description=text)

    # ------------------------------------------------------------------ requests -> settings
    def mode_of(self, model: str) -> str:
        for m in self.modes:
            if model == model_id(m) or model == f"{MODEL_PREFIX}:{m}":
                return m
        raise RequestError(f"unknown model {model!r}; this server serves {', '.join(model_id(m) for m in self.modes)}",
                           status=404, param="model", code="model_not_found")

    def settings(self, mode: str, shirg: ShirgSettings | None = None, max_tokens: int | None = None,
                 temperature: float | None = None, seed: int | None = None) -> Settings:
        """Resolve and validate a request's settings (a RequestError names what is wrong)."""
        s = shirg or ShirgSettings()
        d = self.defaults
        gen_length = max_tokens or d.gen_length
        if gen_length > self.limits.max_tokens:
            raise RequestError(f"max_tokens {gen_length} is over the server's limit of {self.limits.max_tokens}",
                               param="max_tokens")
        if gen_length == d.gen_length:
            block, steps = d.block_length, d.steps
        else:  # one block over all answer slots, the server's slots-per-step
            block = gen_length
            steps = max(1, min(gen_length, round(d.steps * gen_length / d.gen_length)))
        block = s.block_length or block
        steps = s.steps or steps
        schedule = s.schedule or d.schedule
        try:
            if gen_length % block:
                raise ConfigError(f"max_tokens {gen_length} must be a multiple of block_length {block}")
            blocks = gen_length // block
            if steps % blocks:
                raise ConfigError(f"steps {steps} must split evenly over {blocks} blocks; use a multiple of {blocks}")
            if schedule not in SCHEDULES:
                raise ConfigError(f"unknown schedule {schedule!r}")
            num_transfer_tokens(block, steps // blocks, schedule)
            changes = {k: v for k, v in dict(k=s.k, score=s.score, text_pool=s.text_pool, sim_stride=s.sim_stride,
                                             merge=s.merge, coverage=s.coverage, coords=s.coords).items()
                       if v is not None}
            if s.weights is not None:
                changes["weights"] = tuple(s.weights)
            opts = dataclasses.replace(self.options, **changes)
            if seed is not None:
                opts.seed = seed
            opts.validate(mode)
        except ShirgError as e:
            raise RequestError(str(e), param="shirg", code="invalid_settings") from e
        temp = 0.0 if temperature is None else float(temperature)
        return Settings(mode=mode, gen_length=gen_length, steps=steps, block_length=block, temperature=temp,
                        schedule=schedule, seed=0 if seed is None else int(seed),
                        options=dataclasses.astuple(opts))

    def visual_options(self, settings: Settings) -> VisualOptions:
        return VisualOptions(*settings.options)

    # ------------------------------------------------------------------ running (worker thread)
    def run(self, settings: Settings, items: Sequence[tuple[Image.Image, str]]) -> list:
        """One batched model call; returns one :class:`shirg.model.answer.Answer` per item."""
        model = self.models[settings.mode]
        images = [img for img, _ in items]
        questions = [q for _, q in items]
        try:
            # interactive use: a failed high-resolution pass answers in LaViDa's layout and says so
            return model.answer(images, questions, mode=settings.mode, options=self.visual_options(settings),
                                kv_cache=self.defaults.kv_cache, fallback="lavida", **settings.generation())
        finally:
            _trim_heap()

    def warm_up(self, image: Image.Image | str | Path, question: str) -> None:
        """One answer per mode, so first-call costs are not charged to the first request."""
        image = load_image(image)
        for m in self.modes:
            self.run(self.settings(m), [(image, question)])


def _trim_heap() -> None:
    """Hand the heap pages freed by a batch back to the OS (glibc ``malloc_trim``; well under a
    millisecond), so a long-running server's RSS tracks what it holds, not the allocator's peak."""
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim  # noqa: B018 - not glibc: no trimming
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


_LIBC = None


def overlay_png(image: Image.Image, answer, settings: Settings, engine: Engine, title: str) -> bytes | None:
    """The kept-token overlay of a high-resolution answer as PNG bytes (None when nothing was selected)."""
    if answer.selection is None:
        return None
    fig = Figure(figsize=(4.2, 4.4), dpi=90)  # no pyplot: figures built here are thread-safe
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    opts = engine.visual_options(settings)
    draw_overlay(image, answer.selection, 0, "", opts.resolution, answer.content_box, ax=ax, title=title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
