"""lmms-eval model ``shirg``: a LaViDa checkpoint answering in any visual mode (optional extra ``lmms``).

Run real benchmarks with lmms-eval's own task definitions, no fork of lmms-eval:

    pip install 'shirg[lmms]'
    LMMS_EVAL_PLUGINS=shirg.evaluate.lmms_plugin python -m lmms_eval --model shirg \\
        --model_args pretrained=/ckpt/lavida-llada-v1.0-instruct,adapter=runs/train/final,mode=shirg,resolution=672 \\
        --tasks chartqa,docvqa_val,textvqa_val --batch_size 1 --output_path results/

``LMMS_EVAL_PLUGINS`` makes lmms-eval import ``<plugin>.models`` and read its ``AVAILABLE_MODELS``
(this package's ``models`` sub-package). Versions with a model registry also get the class through
``register_model("shirg")`` when this module is imported.

The request handling lives in :func:`generate_until`, a plain function of (model, requests) that
needs no lmms-eval, so it is tested without it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from shirg.errors import ConfigError
from shirg.model.adapter import load_model as _load_model
from shirg.model.answer import HiresFailure
from shirg.model.options import VisualOptions
from shirg.options import parse_weights

log = logging.getLogger(__name__)


@dataclass
class GenerationRequest:
    """What lmms-eval's ``Instance.args`` carry for ``generate_until``, with the visuals resolved."""

    context: str
    gen_kwargs: dict
    visuals: list


def parse_model_args(**kwargs) -> dict:
    """lmms-eval passes ``--model_args a=1,b=x`` as strings; turn them into answer()/VisualOptions values."""
    fields = VisualOptions.__dataclass_fields__
    visual, rest = {}, {}
    for key, value in kwargs.items():
        if key in fields:
            if key == "weights":
                value = parse_weights(str(value).replace(";", ","))
            elif fields[key].type in ("int", "int | None"):
                value = None if value in (None, "None", "") else int(value)
            elif fields[key].type == "float":
                value = float(value)
            elif fields[key].type == "bool":
                value = str(value).lower() in ("1", "true", "yes")
            visual[key] = value
        else:
            rest[key] = value
    return {"options": VisualOptions(**visual), **rest}


def _none(value):
    return None if value in (None, "", "None", "none") else value


def load_model(pretrained: str, device: str = "cuda", dtype: str | None = None, shirg_weights: str | None = None,
               adapter: str | None = None):
    """The model ``ShirgLMMs`` answers with: :func:`shirg.load` with the adapter folder applied
    exactly as ``shirg answer --adapter`` / ``shirg eval --adapter`` apply it."""
    return _load_model(pretrained, device=device, dtype=_none(dtype), shirg_weights=_none(shirg_weights),
                      adapter=_none(adapter))


def _until(text: str, stops: Sequence[str]) -> str:
    for s in stops:
        if s and s in text:
            text = text.split(s)[0]
    return text


def generate_until(model, requests: Sequence[GenerationRequest], mode: str = "shirg", options=None,
                   steps: int | None = None, block_length: int = 32, kv_cache: str = "native",
                   failures: list | None = None) -> list[str]:
    """Answer lmms-eval ``generate_until`` requests one by one with ``model.answer``.

    ``max_new_tokens`` becomes the answer length L (rounded up to a multiple of the block length),
    ``steps`` defaults to L (one token per step, LaViDa's evaluation setting), ``temperature`` is
    passed through, and the text is cut at the first ``until`` string.

    A request whose high-resolution pass fails is a failure of ``mode``, never an answer of another
    mode: its text is empty (lmms-eval scores it wrong), a warning names it, and ``failures`` (when
    given) receives (request index, reason).
    """
    out = []
    for req in requests:
        if not req.visuals:
            raise ConfigError("a shirg request needs an image; this task gave none")
        if len(req.visuals) > 1:
            log.warning("shirg answers about one image; using the first of %d", len(req.visuals))
        gen = dict(req.gen_kwargs or {})
        length = int(gen.get("max_new_tokens", 32))
        block = min(block_length, length)
        length = -(-length // block) * block
        stops = gen.get("until") or []
        stops = [stops] if isinstance(stops, str) else list(stops)
        try:
            ans = model.answer([req.visuals[0]], [req.context], mode=mode, options=options, gen_length=length,
                               steps=steps or length, block_length=block,
                               temperature=float(gen.get("temperature", 0) or 0), kv_cache=kv_cache)[0]
        except HiresFailure as e:
            reason = next(iter(e.reasons.values()))
            log.warning("request %d: %s mode failed (%s); counted as a failed answer of %s", len(out), mode,
                        reason, mode)
            if failures is not None:
                failures.append((len(out), reason))
            out.append("")
            continue
        out.append(_until(ans.text, stops).strip())
    return out


try:  # the lmms-eval class exists only where lmms-eval is installed
    from lmms_eval.api.model import lmms as _LmmsBase

    LMMS_AVAILABLE = True
except ImportError:
    _LmmsBase = object
    LMMS_AVAILABLE = False


class ShirgLMMs(_LmmsBase):  # type: ignore[misc, valid-type]
    """lmms-eval model args: ``pretrained=DIR,mode=shirg,device=cuda,dtype=bfloat16,steps=...,``
    ``adapter=DIR`` (a ``shirg train`` adapter folder: LoRA and/or SHIRG weights, as ``shirg answer
    --adapter``), ``shirg_weights=FILE`` and any VisualOptions field (``resolution=672,k=768,merge=false,...``)."""

    def __init__(self, pretrained: str, mode: str = "shirg", device: str = "cuda", dtype: str | None = None,
                 batch_size: int | str = 1, steps: int | str | None = None, block_length: int | str = 32,
                 kv_cache: str = "native", shirg_weights: str | None = None, adapter: str | None = None,
                 **kwargs) -> None:
        if not LMMS_AVAILABLE:
            raise ImportError("lmms-eval is not installed; pip install 'shirg[lmms]'")
        super().__init__()

        parsed = parse_model_args(**kwargs)
        self.options = parsed.pop("options")
        if parsed:
            log.warning("ignoring unknown shirg model args: %s", ", ".join(parsed))
        self.options.validate(mode)
        self.mode = mode
        self.steps = int(steps) if steps not in (None, "None") else None
        self.block_length = int(block_length)
        self.kv_cache = kv_cache
        self.batch_size_per_gpu = int(batch_size)
        self.model = load_model(pretrained, device=device, dtype=dtype, shirg_weights=shirg_weights, adapter=adapter)
        self.failures: list[tuple[str, object, str]] = []  # (task, doc_id, reason) of failed high-res passes

    def generate_until(self, requests) -> list[str]:
        out = []
        for req in requests:
            context, gen_kwargs, doc_to_visual, doc_id, task, split = req.args
            visuals = doc_to_visual(self.task_dict[task][split][doc_id])
            visuals = [v for v in (visuals or []) if v is not None]
            failed: list = []
            out += generate_until(self.model, [GenerationRequest(context, gen_kwargs, visuals)], self.mode,
                                  self.options, self.steps, self.block_length, self.kv_cache, failures=failed)
            self.failures += [(task, doc_id, reason) for _, reason in failed]
        if self.failures:
            log.warning("%s mode: %d request(s) failed so far (empty answers, scored wrong)", self.mode,
                        len(self.failures))
        return out

    def loglikelihood(self, requests):
        raise NotImplementedError("shirg (a masked-diffusion model) answers by generation only; no log-likelihoods")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("shirg answers single-turn requests only")


if LMMS_AVAILABLE:
    try:
        from lmms_eval.api.registry import register_model

        register_model("shirg")(ShirgLMMs)
    except (ImportError, ValueError, AssertionError) as e:  # older lmms-eval, or registered twice
        log.debug("lmms-eval registry: %s", e)


def lmms_eval_manifest():
    """Entry point of group ``lmms_eval.models``: what lmms-eval's registry resolves ``--model shirg`` to."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="shirg", simple_class_path="shirg.evaluate.lmms_plugin.ShirgLMMs")
