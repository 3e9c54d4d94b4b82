"""Answering: visual tokens for a mode, prompt splicing, one prefill, cached denoising.

Every mode runs through the same model, prompt and sampler, so answers can be compared side by
side. The visual block and the prefix KV cache are built once per request (static selection);
denoising steps only run the answer slots against the cache.

When a high-resolution pass fails (out of memory, a selection error), ``fallback`` decides:
``None`` (comparisons: ``eval``, ``bench``, lmms-eval) raises :class:`HiresFailure`, so the failure
counts against that mode; ``"lavida"`` (interactive: ``answer``, ``demo``) answers that sample in
LaViDa's own layout and says so in ``meta["fallback"]`` / ``meta["fallback_reason"]``.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from torch import Tensor

from shirg.canvas import canvas_resolution
from shirg.errors import ConfigError, ShirgError
from shirg.memory import PeakRss, memory_report
from shirg.model.kv_cache import cache_factory
from shirg.model.options import CACHE_MODES, LAVIDA_MODES, POOL_CHOICES, VisualOptions
from shirg.model.profile import Stopwatch
from shirg.model.prompt import prompt_token_ids
from shirg.model.sampler import DEFAULT_SHIFT, SAMPLERS, SCHEDULES, generate, generate_threshold, truncate_at_stop
from shirg.model.upstream_prompt import PROMPT_STYLES, lavida_eval_text, prompt_ids_for_style
from shirg.model.visual import hires_selection, lavida_visual, patch_size, splice
from shirg.tokens.types import TokenSet
from shirg.vision.preprocess import load_image

if TYPE_CHECKING:
    from shirg.model.lavida import LavidaModel

log = logging.getLogger(__name__)
FALLBACKS = (None, "lavida")


class HiresFailure(RuntimeError):
    """A high-resolution pass failed and no fallback was asked for. ``reasons``: sample index ->
    "ExceptionType: message" for each failed sample of the request."""

    def __init__(self, mode: str, reasons: dict[int, str]) -> None:
        self.mode = mode
        self.reasons = dict(reasons)
        first = next(iter(self.reasons.values()), "")
        super().__init__(f"{mode} mode failed for {len(self.reasons)} sample(s): {first}")


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
    fallback: str | None = None,
    sampler: str = "fixed",
    threshold: float = 0.9,
    shift: float = DEFAULT_SHIFT,
    predict_mask: bool = False,
    cache: str = "prefix",
    prompt_style: str = "shirg",
    decode: str = "shirg",
    pool: str = "auto",
) -> list[Answer]:
    """Answer one question per image. ``images``/``questions``: one item or equal-length lists.

    Returns one :class:`Answer` per sample, whose ``meta`` has the mode, visual token count,
    prompt length, per-stage seconds (``time_s``), memory and, with ``fallback="lavida"``,
    ``fallback`` / ``fallback_reason`` where the high-resolution path failed and LaViDa's own layout
    answered instead. With ``fallback=None`` such a failure raises :class:`HiresFailure`.

    ``sampler``: "fixed" (``steps`` split over the blocks by ``schedule``) or "threshold" (every
    masked slot of the block at confidence >= ``threshold`` committed per step, at least one;
    ``steps`` and ``schedule`` unused); ``meta["steps_used"]`` counts the denoising steps taken.
    LaViDa / LLaDA behaviours (docs/lavida_recipe.md): ``shift`` is the shift schedule's a (a float);
    ``predict_mask`` lets the mask id be predicted (such a slot stays masked). ``cache``: ``prefix``
    runs the prompt once and each step only the answer slots against its keys/values (prefix-DLM);
    ``none`` recomputes the whole sequence every step, the prompt attending to the answer slots too
    (LaViDa's uncached path, which its published DocVQA / ChartQA / TextVQA runs used); ``kv_cache``
    (storage format) applies to ``prefix`` only. ``prompt_style`` ``lavida-eval`` gives the prompt
    ids LaViDa's evaluation gives; ``decode`` ``lavida-eval`` decodes as its lmms-eval model does
    (every answer slot, special tokens skipped, leading "!" stripped) instead of cutting at the first
    stop token. ``pool`` (``lavida`` / ``lowres``): ``auto`` follows the checkpoint, ``on`` / ``off``
    force LaViDa's 27 -> 14 pooling.
    """
    opts = options or VisualOptions(resolution=canvas_resolution(model.config.raw))
    opts.validate(mode, patch_size(model))
    if fallback not in FALLBACKS:
        raise ConfigError(f"fallback must be None or 'lavida', got {fallback!r}")
    images, questions = _as_list(images, "images"), _as_list(questions, "questions")
    if len(images) != len(questions):
        raise ConfigError(f"{len(images)} images but {len(questions)} questions; give one question per image")
    if gen_length < 1 or block_length < 1 or gen_length % block_length:
        raise ConfigError(f"gen_length {gen_length} must be a positive multiple of block_length {block_length}")
    if temperature < 0 or steps < 1:
        raise ConfigError(f"temperature must be >= 0 (0 = greedy) and steps >= 1, got {temperature} and {steps}")
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown schedule {schedule!r}; valid schedules: {', '.join(SCHEDULES)}")
    if sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler {sampler!r}; valid samplers: {', '.join(SAMPLERS)}")
    if sampler == "threshold" and not 0.0 < threshold <= 1.0:
        raise ConfigError(f"threshold must be in (0, 1], got {threshold}")
    if schedule == "shift" and not 0 < shift < float("inf"):
        raise ConfigError(f"the schedule shift must be a positive finite number, got {shift}")
    if prompt_style not in PROMPT_STYLES or decode not in PROMPT_STYLES:
        raise ConfigError(f"prompt style and decode must be one of {', '.join(PROMPT_STYLES)}, "
                          f"got {prompt_style!r} and {decode!r}")
    if pool not in POOL_CHOICES:
        raise ConfigError(f"unknown pool {pool!r}; valid: {', '.join(POOL_CHOICES)}")
    if cache not in CACHE_MODES:
        raise ConfigError(f"unknown cache {cache!r}; valid: {', '.join(CACHE_MODES)}")
    if model.tokenizer is None:
        raise ConfigError("the model has no tokenizer; load it with shirg.load(folder)")
    factory = cache_factory(kv_cache)
    device = model.device
    watch = Stopwatch(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss = PeakRss(release=False) if device.type == "cpu" else contextlib.nullcontext()
    with rss:
        t_start = time.perf_counter()
        with watch.stage("preprocess"):
            pil = [load_image(img) for img in images]
            # the question as plain text; special tokens only from the template (either style)
            prompt_ids = [prompt_ids_for_style(prompt_token_ids(q, model.tokenizer), model.tokenizer, prompt_style)
                          for q in questions]

        fell_back: list[str | None] = [None] * len(pil)
        selections: list[tuple[TokenSet, tuple] | None] = [None] * len(pil)
        if mode in LAVIDA_MODES:
            visual = lavida_visual(model, pil, mode, watch, pool={"auto": None, "on": True, "off": False}[pool])
        else:
            visual = _hires_per_sample(model, pil, questions, mode, opts, watch, fallback, fell_back, selections)

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
            if cache == "prefix":
                prefix = model.model.prefill(embeds, key_mask, cache_factory=factory)
        vocab = model.config.llm.vocab_size
        generator = torch.Generator(device=device).manual_seed(seed) if temperature > 0 else None
        if cache == "prefix":
            def logits_fn(answer_ids: Tensor) -> Tensor:
                return model.model.forward_cached(model.model.embed(answer_ids), prefix)[..., :vocab]
        else:
            logits_fn = full_recompute(model, embeds, key_mask, vocab)

        with watch.stage("denoise"):
            if sampler == "threshold":
                out, steps_used = generate_threshold(
                    logits_fn, len(pil), gen_length, block_length, model.config.llm.mask_token_id,
                    threshold=threshold, temperature=temperature, generator=generator, device=device)
                steps_used = steps_used.tolist()
            else:
                out = generate(logits_fn, len(pil), gen_length, steps, block_length, model.config.llm.mask_token_id,
                               temperature=temperature, schedule=schedule, generator=generator, device=device,
                               shift=shift, predict_mask=predict_mask)
                steps_used = [steps] * len(pil)
        stops = {model.config.llm.eos_token_id}
        if model.config.eot_token_id is not None:
            stops.add(model.config.eot_token_id)
        eot = model.tokenizer.convert_tokens_to_ids("<|eot_id|>")
        if isinstance(eot, int) and eot >= 0:
            stops.add(eot)
        watch.times["total"] = time.perf_counter() - t_start
    mem = memory_report(device)
    if isinstance(rss, PeakRss):
        mem["request_peak_rss_mb"] = rss.peak / 2**20  # RSS peak during this request (sampled)
    answers = []
    for b in range(len(pil)):
        if decode == "shirg":
            ids = truncate_at_stop(out[b].tolist(), stops)
            text = model.tokenizer.decode(ids, skip_special_tokens=True).strip()
        else:
            ids = out[b].tolist()
            text = lavida_eval_text(ids, model.tokenizer)
        meta = {
            "mode": fell_back[b] and "lavida" or mode,
            "requested_mode": mode,
            "visual_tokens": int(visual[b].shape[0]),
            "prompt_length": int(key_mask[b].sum()),
            "gen_length": gen_length,
            "steps": steps,
            "sampler": sampler,
            "steps_used": int(steps_used[b]),
            "block_length": block_length,
            "schedule": schedule,
            **({"shift": shift} if schedule == "shift" else {}),
            "predict_mask": predict_mask,
            "pool": pool,
            "prompt_style": prompt_style,
            "decode": decode,
            "batch_size": len(pil),
            "weight_format": getattr(model, "weight_format", "float"),
            "time_s": dict(watch.times),
            "cache": cache,
            "kv_cache": kv_cache,
            "kv_cache_bytes": prefix.nbytes() if cache == "prefix" else 0,
            **mem,
        }
        if sampler == "threshold":
            meta["threshold"] = threshold
        if fell_back[b]:
            meta["fallback"] = "lavida"
            meta["fallback_reason"] = fell_back[b]
        sel, box = selections[b] or (None, None)
        answers.append(Answer(text=text, token_ids=ids, meta=meta, selection=sel, content_box=box))
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return answers


def full_recompute(model: LavidaModel, embeds: Tensor, key_mask: Tensor, vocab: int):
    """logits_fn for ``cache="none"``: every call runs prompt + answer slots through the whole model.

    Prompts are right-padded; each sample's answer slots take the positions right after its real
    tokens and its padding is masked out, so a batch gives each sample its unpadded result.
    """
    core = model.model
    b, lp, _ = embeds.shape
    positions = torch.arange(lp, device=embeds.device).expand(b, lp)
    start = key_mask.long().sum(-1, keepdim=True)

    def logits_fn(answer_ids: Tensor) -> Tensor:
        la = answer_ids.shape[1]
        answer = core.embed(answer_ids).to(embeds.dtype)
        pos = torch.cat([positions, start + torch.arange(la, device=embeds.device)], dim=1)
        mask = torch.cat([key_mask, torch.ones_like(answer_ids, dtype=torch.bool)], dim=1)
        return core(torch.cat([embeds, answer], dim=1), key_mask=mask, position_ids=pos, logits_tail=la)[..., :vocab]

    return logits_fn


def _release(model: LavidaModel) -> None:
    if model.device.type == "cuda":
        torch.cuda.empty_cache()


def _hires_per_sample(model, pil, questions, mode, opts, watch, fallback, fell_back, selections) -> list[Tensor]:
    """The high-resolution path for the batch; where it fails (OOM, selection error), sample by sample.
    A sample that still fails raises :class:`HiresFailure` (``fallback=None``) or is answered in
    ``lavida`` (``fallback="lavida"``, recorded in ``fell_back[i]``). Fills ``selections[i]`` with
    sample i's (TokenSet, content box) where the high-resolution path answered."""
    try:
        visual, sel, boxes = hires_selection(model, pil, questions, mode, opts, watch)
        selections[:] = [(sel.index_batch(i), box) for i, box in enumerate(boxes)]
        return visual
    except ShirgError:
        raise
    except Exception as batch_error:  # noqa: BLE001 - any failure of the hi-res path is retried per sample
        _release(model)
        log.debug("high-resolution path failed for the batch: %r; retrying per sample", batch_error)
    visual: list[Tensor | None] = []
    failed: dict[int, str] = {}
    for i, (img, q) in enumerate(zip(pil, questions, strict=True)):
        try:
            vis, sel, boxes = hires_selection(model, [img], [q], mode, opts, watch)
            visual.append(vis[0])
            selections[i] = (sel, boxes[0])
        except ShirgError:
            raise
        except Exception as e:  # noqa: BLE001
            _release(model)
            failed[i] = f"{type(e).__name__}: {e}"
            visual.append(None)
    if failed and fallback is None:
        raise HiresFailure(mode, failed)
    for i, reason in failed.items():
        log.warning("sample %d: %s mode failed (%s); answering in lavida mode instead", i, mode, reason)
        fell_back[i] = reason
        visual[i] = lavida_visual(model, [pil[i]], "lavida", watch)[0]
    return visual
