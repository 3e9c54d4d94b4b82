"""Answering: visual tokens for every mode, prompt splicing, one prefill, cached denoising.

Every mode runs through the same model, prompt and sampler, so answers can be compared side by
side. The visual block and the prefix KV cache are built once per request (static selection);
denoising steps only run the answer slots against the cache.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from shirg.canvas import canvas_resolution
from shirg.errors import ConfigError, ShirgError
from shirg.memory import PeakRss, memory_report
from shirg.model.anyres import anyres_views, expand2square, pool_view_tokens, unpad_merge
from shirg.model.lavida import LavidaModel
from shirg.model.prompt import IMAGE_TOKEN_ID, build_prompt, question_token_ids, tokenize_prompt
from shirg.model.sampler import SCHEDULES, generate, truncate_at_stop
from shirg.tokens.dual_scale import default_k, dual_scale, scaffold_size
from shirg.tokens.registry import TEXT_STRATEGIES, ShirgOptions, select_tokens, strategy_names
from shirg.tokens.scoring import DEFAULT_WEIGHTS, SCORE_SOURCES, TEXT_POOLS, check_weights
from shirg.tokens.selection import check_budget
from shirg.tokens.types import KIND_SCAFFOLD, DualScaleTokens, TextContext, TokenSet, hi_subset
from shirg.vision.preprocess import check_resolution, load_image, prepare_image, to_tensor

log = logging.getLogger(__name__)

LAVIDA_MODES = ("lavida", "lowres")
HIRES_MODES = ("full", "shirg", "uniform", "pool", "random", "text-topk", "saint", "tome", "visionzip", "divprune")
MODES = LAVIDA_MODES + HIRES_MODES


@dataclass
class VisualOptions:
    """Options of the high-resolution modes (ignored by ``lavida`` / ``lowres``)."""

    resolution: int = 672
    k: int | None = None  # default round(G*G / 3)
    scaffold: bool = True
    merge: bool = True
    merge_eps: float = 0.05
    coverage: bool = True
    weights: tuple[float, ...] = DEFAULT_WEIGHTS
    score: str = "text"
    text_pool: str = "max"
    coords: bool = True
    seed: int = 0
    resize: str = "pad"

    def budget(self) -> int:
        grid = self.resolution // 14
        return self.k if self.k is not None else default_k(grid)

    def validate(self, mode: str) -> None:
        """Fail before any work, naming the valid choices."""
        if mode not in MODES:
            raise ConfigError(f"unknown mode {mode!r}; valid modes: {', '.join(MODES)}")
        if mode in LAVIDA_MODES:
            return
        check_resolution(self.resolution)
        if self.merge_eps < 0:
            raise ConfigError(f"merge eps must be >= 0 (0 turns merging off), got {self.merge_eps}")
        grid = self.resolution // 14
        check_weights(self.weights)
        if self.score not in SCORE_SOURCES:
            raise ConfigError(f"unknown score source {self.score!r}; choose one of {', '.join(SCORE_SOURCES)}")
        if self.text_pool not in TEXT_POOLS:
            raise ConfigError(f"unknown text pooling {self.text_pool!r}; choose one of {', '.join(TEXT_POOLS)}")
        if mode != "full":
            cover = scaffold_size(grid) if (mode == "shirg" and self.coverage) else None
            check_budget(self.budget(), grid * grid, cover)
        if mode not in ("full",) and mode not in strategy_names():
            raise ConfigError(f"mode {mode!r} has no registered strategy; valid: {', '.join(strategy_names())}")

    def strategy_options(self, mode: str) -> dict:
        if mode == "shirg":
            return {"options": ShirgOptions(weights=tuple(self.weights), source=self.score, text_pool=self.text_pool,
                                            coverage=self.coverage, merge=self.merge, merge_eps=self.merge_eps)}
        if mode == "random":
            return {"seed": self.seed}
        if mode == "text-topk":
            return {"text_pool": self.text_pool}
        return {}


@dataclass
class Answer:
    """One answer and what it cost. ``meta`` holds token counts, per-stage seconds, memory, fallback.

    High-resolution answers also keep, in memory only (not in :meth:`to_dict`), the sample's
    ``selection`` (the kept TokenSet, a batch of one) and ``content_box`` (where the image sits on
    the canvas), so evidence and overlays need no second vision pass; both are None otherwise.
    """

    text: str
    token_ids: list[int]
    meta: dict[str, Any] = field(default_factory=dict)
    selection: TokenSet | None = field(default=None, repr=False, compare=False)
    content_box: tuple[float, float, float, float] | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "token_ids": list(self.token_ids), "meta": copy.deepcopy(self.meta)}


class Stopwatch:
    """Per-stage time. CUDA: events recorded around the stage, read after a synchronize, so GPU
    work is charged to the stage that launched it; CPU: perf_counter."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.times: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str):
        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            try:
                yield
            finally:
                end.record()
                end.synchronize()
                self.times[name] = self.times.get(name, 0.0) + start.elapsed_time(end) / 1e3
            return
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t0


# ----------------------------------------------------------------------------- visual tokens


def question_context(model: LavidaModel, questions: Sequence[str]) -> TextContext:
    """Question-token input embeddings (no template tokens), padded, with a mask."""
    ids = [question_token_ids(q, model.tokenizer) for q in questions]
    t = max(1, max(len(i) for i in ids))
    table = torch.zeros(len(ids), t, dtype=torch.long)
    mask = torch.zeros(len(ids), t, dtype=torch.bool)
    for b, row in enumerate(ids):
        table[b, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[b, : len(row)] = True
    embeds = model.model.embed(table.to(model.device))
    return TextContext(project=model.project, question=embeds, question_mask=mask.to(model.device))


def lavida_visual(model: LavidaModel, images: Sequence[Image.Image], mode: str, watch: Stopwatch) -> list[Tensor]:
    """LaViDa's own layouts: ``lavida`` (anyres views + unpad + newlines) or ``lowres`` (one padded view)."""
    core, cfg = model.model, model.config
    view = cfg.vision.image_size  # 384 for SigLIP so400m; smaller towers keep their own view size
    with watch.stage("preprocess"):
        if mode == "lowres" or cfg.image_aspect_ratio != "anyres":
            views = [[expand2square(img).resize((view, view), Image.Resampling.BICUBIC)] for img in images]
            grids = [None] * len(images)
        else:
            pairs = [anyres_views(img, cfg.pinpoints, view) for img in images]
            views, grids = [p[0] for p in pairs], [p[1] for p in pairs]
        pixels = torch.stack([to_tensor(v) for vs in views for v in vs]).to(model.device, model.dtype)
    with watch.stage("vision"):
        feats = core.vision_tower(pixels)
    with watch.stage("project"):
        x = model.project(feats)
        if cfg.pool_views:
            x = pool_view_tokens(x)
    out, start = [], 0
    t = math.isqrt(x.shape[1])
    newline = core.image_newline.to(x.dtype)
    for img, vs, grid in zip(images, views, grids, strict=True):
        v = x[start : start + len(vs)]
        start += len(vs)
        if grid is None:
            out.append(torch.cat([v[0], newline[None]], dim=0))
        else:
            tiles = v[1:].reshape(len(vs) - 1, t, t, -1)
            out.append(unpad_merge(v[0], tiles, grid, img.size, newline))
    return out


def select_visual(
    model: LavidaModel,
    tokens: DualScaleTokens,
    questions: Sequence[str],
    mode: str,
    opts: VisualOptions,
) -> TokenSet:
    """The tokens a high-resolution mode keeps: ``full`` (every hi-detail token) or its strategy."""
    if mode == "full":
        all_idx = torch.arange(tokens.num_hi, device=tokens.hi.device).expand(tokens.batch_size, -1)
        return hi_subset(tokens, all_idx, "full")
    text = question_context(model, questions) if mode in TEXT_STRATEGIES else None
    return select_tokens(mode, tokens, opts.budget(), text, scaffold=opts.scaffold, **opts.strategy_options(mode))


def hires_visual(
    model: LavidaModel,
    images: Sequence[Image.Image],
    questions: Sequence[str],
    mode: str,
    opts: VisualOptions,
    watch: Stopwatch,
) -> list[Tensor]:
    """One SigLIP pass at R x R, then ``full`` (all tokens) or a selection strategy, coordinates, projector."""
    return _hires_visual(model, images, questions, mode, opts, watch)[0]


def _hires_visual(
    model: LavidaModel,
    images: Sequence[Image.Image],
    questions: Sequence[str],
    mode: str,
    opts: VisualOptions,
    watch: Stopwatch,
) -> tuple[list[Tensor], TokenSet, list[tuple[float, float, float, float]]]:
    """:func:`hires_visual`, also returning the selection and each image's content box."""
    core = model.model
    with watch.stage("preprocess"):
        prepared = [prepare_image(img, opts.resolution, opts.resize) for img in images]
        pixels = torch.stack([p.pixels for p in prepared]).to(model.device, model.dtype)
        boxes = torch.tensor([p.content_box for p in prepared], device=model.device)
    with watch.stage("vision"):
        feats = core.vision_tower(pixels)
    # No no_grad here: scores and decisions are computed without gradients inside the strategies,
    # while the kept features stay differentiable for training (answer() itself runs under no_grad).
    with watch.stage("select"):
        sel = select_visual(model, dual_scale(feats, boxes), questions, mode, opts)
    with watch.stage("project"):
        x = sel.features
        if opts.coords and mode == "shirg":
            x = model.shirg["coord_embed"].add_to(x, sel.boxes, sel.kind != KIND_SCAFFOLD)
        x = model.project(x)
    return list(x.unbind(0)), sel, [tuple(p.content_box) for p in prepared]


# ----------------------------------------------------------------------------- prompt + generation


def splice(model: LavidaModel, prompt_ids: list[list[int]], visual: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Replace each prompt's image placeholder by its visual block; right-pad.

    Returns embeddings [B, L, d] and key mask [B, L] (True = real token).
    """
    core = model.model
    rows = []
    for ids, vis in zip(prompt_ids, visual, strict=True):
        p = ids.index(IMAGE_TOKEN_ID)
        t = torch.tensor([i for i in ids if i != IMAGE_TOKEN_ID], device=model.device)
        emb = core.embed(t)
        rows.append(torch.cat([emb[:p], vis.to(emb.dtype), emb[p:]], dim=0))
    length = max(r.shape[0] for r in rows)
    d = rows[0].shape[1]
    embeds = torch.zeros(len(rows), length, d, dtype=rows[0].dtype, device=model.device)
    mask = torch.zeros(len(rows), length, dtype=torch.bool, device=model.device)
    for b, r in enumerate(rows):
        embeds[b, : r.shape[0]] = r
        mask[b, : r.shape[0]] = True
    return embeds, mask


def _as_list(x, name: str) -> list:
    if isinstance(x, (str, Path, Image.Image)):
        return [x]
    x = list(x)
    if not x:
        raise ConfigError(f"no {name} given")
    return x


@torch.no_grad()
def answer(
    model: LavidaModel,
    images,
    questions,
    mode: str = "lavida",
    gen_length: int = 32,
    steps: int = 32,
    block_length: int = 32,
    temperature: float = 0.0,
    schedule: str = "uniform",
    seed: int = 0,
    options: VisualOptions | None = None,
    kv_cache: str = "native",
) -> list[Answer]:
    """Answer one question per image. ``images``/``questions``: one item or equal-length lists.

    Returns one :class:`Answer` per sample, whose ``meta`` has the mode, visual token count,
    prompt length, per-stage seconds (``time_s``), memory, and ``fallback`` when the
    high-resolution path failed and LaViDa's own layout answered instead.
    """
    from shirg.model.kv_cache import cache_factory

    opts = options or VisualOptions(resolution=canvas_resolution(model.config.raw))
    opts.validate(mode)
    images, questions = _as_list(images, "images"), _as_list(questions, "questions")
    if len(images) != len(questions):
        raise ConfigError(f"{len(images)} images but {len(questions)} questions; give one question per image")
    if gen_length < 1 or block_length < 1 or gen_length % block_length:
        raise ConfigError(f"gen_length {gen_length} must be a positive multiple of block_length {block_length}")
    if temperature < 0 or steps < 1:
        raise ConfigError(f"temperature must be >= 0 (0 = greedy) and steps >= 1, got {temperature} and {steps}")
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown schedule {schedule!r}; valid schedules: {', '.join(SCHEDULES)}")
    if model.tokenizer is None:
        raise ConfigError("the model has no tokenizer; load it with shirg.load(folder)")
    factory = cache_factory(kv_cache)
    device = model.device
    watch = Stopwatch(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sampler = PeakRss(release=False) if device.type == "cpu" else contextlib.nullcontext()
    with sampler:
        t_start = time.perf_counter()
        with watch.stage("preprocess"):
            pil = [load_image(img) for img in images]
            prompt_ids = [tokenize_prompt(build_prompt(q, model.tokenizer), model.tokenizer) for q in questions]

        fallback: list[str | None] = [None] * len(pil)
        selections: list[tuple[TokenSet, tuple] | None] = [None] * len(pil)
        if mode in LAVIDA_MODES:
            visual = lavida_visual(model, pil, mode, watch)
        else:
            visual = _hires_with_fallback(model, pil, questions, mode, opts, watch, fallback, selections)

        for i, (ids, vis) in enumerate(zip(prompt_ids, visual, strict=True)):
            total = len(ids) - 1 + vis.shape[0] + gen_length
            if total > model.config.max_length:
                raise ConfigError(
                    f"sample {i}: prompt ({len(ids) - 1} text + {vis.shape[0]} visual tokens) plus gen_length "
                    f"{gen_length} = {total} exceeds the model's context of {model.config.max_length}; "
                    "shorten the question or lower gen_length"
                )
        with watch.stage("prefill"):
            embeds, key_mask = splice(model, prompt_ids, visual)
            cache = model.model.prefill(embeds, key_mask, cache_factory=factory)
        vocab = model.config.llm.vocab_size
        generator = torch.Generator(device=device).manual_seed(seed) if temperature > 0 else None

        def logits_fn(answer_ids: Tensor) -> Tensor:
            return model.model.forward_cached(model.model.embed(answer_ids), cache)[..., :vocab]

        with watch.stage("denoise"):
            out = generate(logits_fn, len(pil), gen_length, steps, block_length, model.config.llm.mask_token_id,
                           temperature=temperature, schedule=schedule, generator=generator, device=device)
        stops = {model.config.llm.eos_token_id}
        if model.config.eot_token_id is not None:
            stops.add(model.config.eot_token_id)
        eot = model.tokenizer.convert_tokens_to_ids("<|eot_id|>")
        if isinstance(eot, int) and eot >= 0:
            stops.add(eot)
        watch.times["total"] = time.perf_counter() - t_start
    mem = memory_report(device)
    if isinstance(sampler, PeakRss):
        mem["request_peak_rss_mb"] = sampler.peak / 2**20  # RSS peak during this request (sampled)
    answers = []
    for b in range(len(pil)):
        ids = truncate_at_stop(out[b].tolist(), stops)
        text = model.tokenizer.decode(ids, skip_special_tokens=True).strip()
        meta = {
            "mode": fallback[b] and "lavida" or mode,
            "requested_mode": mode,
            "visual_tokens": int(visual[b].shape[0]),
            "prompt_length": int(key_mask[b].sum()),
            "gen_length": gen_length,
            "steps": steps,
            "batch_size": len(pil),
            "time_s": dict(watch.times),
            "kv_cache": kv_cache,
            "kv_cache_bytes": cache.nbytes(),
            **mem,
        }
        if fallback[b]:
            meta["fallback"] = "lavida"
            meta["fallback_reason"] = fallback[b]
        sel, box = selections[b] or (None, None)
        answers.append(Answer(text=text, token_ids=ids, meta=meta, selection=sel, content_box=box))
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return answers


def _hires_with_fallback(model, pil, questions, mode, opts, watch, fallback, selections) -> list[Tensor]:
    """High-resolution path; a sample whose path fails (OOM, selection error) is answered in ``lavida``.
    Fills ``selections[i]`` with sample i's (TokenSet, content box) where the high-resolution path answered."""
    try:
        visual, sel, boxes = _hires_visual(model, pil, questions, mode, opts, watch)
        selections[:] = [(sel.index_batch(i), box) for i, box in enumerate(boxes)]
        return visual
    except ShirgError:
        raise
    except Exception as batch_error:  # noqa: BLE001 - any failure of the hi-res path falls back, loudly
        if model.device.type == "cuda":
            torch.cuda.empty_cache()
        log.debug("high-resolution path failed for the batch: %r; retrying per sample", batch_error)
    visual = []
    for i, (img, q) in enumerate(zip(pil, questions, strict=True)):
        try:
            vis, sel, boxes = _hires_visual(model, [img], [q], mode, opts, watch)
            visual.append(vis[0])
            selections[i] = (sel, boxes[0])
        except ShirgError:
            raise
        except Exception as e:  # noqa: BLE001
            if model.device.type == "cuda":
                torch.cuda.empty_cache()
            reason = f"{type(e).__name__}: {e}"
            log.warning("sample %d: %s mode failed (%s); answering in lavida mode instead", i, mode, reason)
            fallback[i] = reason
            visual.append(lavida_visual(model, [img], "lavida", watch)[0])
    return visual
