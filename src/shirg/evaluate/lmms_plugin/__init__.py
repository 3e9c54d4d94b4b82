"""lmms-eval model ``shirg``: a LaViDa checkpoint answering in any visual mode (optional extra ``lmms``).

Run real benchmarks with lmms-eval's own task definitions, no fork of lmms-eval:

    pip install 'shirg[lmms]'                 # what lmms-eval's CLI imports (pyproject.toml)
    pip install --no-deps lmms-eval==0.7.3    # without its torchvision, which would replace torch
    python -m lmms_eval --model shirg \\
        --model_args pretrained=/ckpt/lavida-llada-v1.0-instruct,adapter=runs/train/final,mode=shirg,resolution=672 \\
        --tasks chartqa,docvqa_val,textvqa_val --batch_size 1 --output_path results/
    torchrun --nproc_per_node 8 -m lmms_eval --model shirg ...     # one process per GPU

lmms-eval 0.7.3 finds ``--model shirg`` through this package's entry point (group
``lmms_eval.models``). The deprecated ``LMMS_EVAL_PLUGINS=shirg.evaluate.lmms_plugin`` route also
works: lmms-eval imports ``<plugin>.models`` (``AVAILABLE_MODELS``) and adds ``<plugin>.tasks``
(an empty task folder here) to its task paths. lmms-eval 0.7.3 itself needs ``filelock<4`` (in the
``lmms`` extra), and its ``torchvision`` must match the installed torch, or be absent (``--no-deps``).

Every process gets its rank, the world size and its own device from accelerate (``cuda:<local
rank>``, or the CPU); requests with equal generation settings are answered ``batch_size`` at a time
in one ``model.answer`` call.

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
               adapter: str | None = None, revision: str | None = None):
    """The model ``ShirgLMMs`` answers with: :func:`shirg.load` with the adapter folder applied
    exactly as ``shirg answer --adapter`` / ``shirg eval --adapter`` apply it."""
    return _load_model(pretrained, device=device, dtype=_none(dtype), shirg_weights=_none(shirg_weights),
                       adapter=_none(adapter), revision=_none(revision))


ANSWER_ARGS = {"cache": str, "schedule": str, "shift": float, "predict_mask": bool, "prompt_style": str,
               "decode": str, "pool": str}


def split_answer_args(kwargs: dict) -> tuple[dict, dict]:
    """(the rest, answer() generation kwargs parsed from lmms-eval's strings)."""
    rest, answer = {}, {}
    for key, value in kwargs.items():
        if key in ANSWER_ARGS:
            kind = ANSWER_ARGS[key]
            answer[key] = str(value).lower() in ("1", "true", "yes") if kind is bool else kind(value)
        else:
            rest[key] = value
    return rest, answer


def process_placement(device: str | None = None):
    """(rank, world size, torch device, accelerator) of this process.

    Under ``torchrun`` / ``accelerate launch`` each process takes ``cuda:<local rank>`` (or the CPU
    when there is no GPU); alone it takes ``device`` (default: cuda when available, else cpu)."""
    import torch
    from accelerate import Accelerator

    accelerator = Accelerator()
    world, local = accelerator.num_processes, accelerator.local_process_index
    if device in (None, "", "auto", "None") or (world > 1 and str(device) == "cuda"):
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    return accelerator.process_index, world, torch.device(device), accelerator


def _until(text: str, stops: Sequence[str]) -> str:
    for s in stops:
        if s and s in text:
            text = text.split(s)[0]
    return text


def _request_settings(req: GenerationRequest, steps: int | None, block_length: int) -> tuple[dict, list[str]]:
    gen = dict(req.gen_kwargs or {})
    length = int(gen.get("max_new_tokens", 32))
    block = min(block_length, length)
    length = -(-length // block) * block
    stops = gen.get("until") or []
    stops = [stops] if isinstance(stops, str) else list(stops)
    settings = dict(gen_length=length, steps=steps or length, block_length=block,
                    temperature=float(gen.get("temperature", 0) or 0))
    return settings, stops


def generate_until(model, requests: Sequence[GenerationRequest], mode: str = "shirg", options=None,
                   steps: int | None = None, block_length: int = 32, kv_cache: str = "native",
                   failures: list | None = None, batch_size: int = 1, **answer_kwargs) -> list[str]:
    """Answer lmms-eval ``generate_until`` requests with ``model.answer``, in the requests' order.

    ``max_new_tokens`` becomes the answer length L (rounded up to a multiple of the block length),
    ``steps`` defaults to L (one token per step, LaViDa's evaluation setting), ``temperature`` is
    passed through, and the text is cut at the first ``until`` string. Requests with equal settings
    go ``batch_size`` at a time into one ``model.answer`` call. ``answer_kwargs`` (cache, schedule,
    shift, predict_mask, prompt_style, decode, pool) go to every call.

    A request whose high-resolution pass fails is a failure of ``mode``, never an answer of another
    mode: its text is empty (lmms-eval scores it wrong), a warning names it, and ``failures`` (when
    given) receives (request index, reason). A failing batch is answered again request by request.
    """
    groups: dict[tuple, list[int]] = {}
    prepared = []
    for i, req in enumerate(requests):
        if not req.visuals:
            raise ConfigError("a shirg request needs an image; this task gave none")
        if len(req.visuals) > 1:
            log.warning("shirg answers about one image; using the first of %d", len(req.visuals))
        settings, stops = _request_settings(req, steps, block_length)
        prepared.append(stops)
        groups.setdefault(tuple(sorted(settings.items())), []).append(i)
    out: list[str] = [""] * len(requests)

    def run(chunk: list[int], settings: dict) -> None:
        try:
            answers = model.answer([requests[i].visuals[0] for i in chunk], [requests[i].context for i in chunk],
                                   mode=mode, options=options, kv_cache=kv_cache, **settings, **answer_kwargs)
        except HiresFailure as e:
            if len(chunk) > 1:
                for i in chunk:
                    run([i], settings)
                return
            reason = next(iter(e.reasons.values()))
            log.warning("request %d: %s mode failed (%s); counted as a failed answer of %s", chunk[0], mode,
                        reason, mode)
            if failures is not None:
                failures.append((chunk[0], reason))
            return
        for i, ans in zip(chunk, answers, strict=True):
            out[i] = _until(ans.text, prepared[i]).strip()

    for key, members in groups.items():
        step = max(1, batch_size)
        for start in range(0, len(members), step):
            run(members[start : start + step], dict(key))
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

    def __init__(self, pretrained: str, mode: str = "shirg", device: str | None = None, dtype: str | None = None,
                 batch_size: int | str = 1, steps: int | str | None = None, block_length: int | str = 32,
                 kv_cache: str = "native", shirg_weights: str | None = None, adapter: str | None = None,
                 revision: str | None = None, **kwargs) -> None:
        if not LMMS_AVAILABLE:
            raise ImportError("lmms-eval is not installed; pip install 'shirg[lmms]' && "
                              "pip install --no-deps lmms-eval==0.7.3")
        super().__init__()
        self._rank, self._world_size, self._device, self.accelerator = process_placement(device)
        kwargs, self.answer_kwargs = split_answer_args(kwargs)

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
        self.model = load_model(pretrained, device=str(self._device), dtype=dtype, shirg_weights=shirg_weights,
                                adapter=adapter, revision=revision)
        self.failures: list[tuple[str, object, str]] = []  # (task, doc_id, reason) of failed high-res passes

    @property
    def device(self):
        return self._device

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    def generate_until(self, requests) -> list[str]:
        from tqdm import tqdm

        reqs, meta = [], []
        for req in requests:
            context, gen_kwargs, doc_to_visual, doc_id, task, split = req.args
            visuals = doc_to_visual(self.task_dict[task][split][doc_id])
            reqs.append(GenerationRequest(context, gen_kwargs, [v for v in (visuals or []) if v is not None]))
            meta.append((task, doc_id))
        failed: list = []
        with tqdm(total=len(reqs), disable=self._rank != 0, desc="shirg answers") as bar:
            out = generate_until(self.model, reqs, self.mode, self.options, self.steps, self.block_length,
                                 self.kv_cache, failures=failed, batch_size=self.batch_size_per_gpu,
                                 **self.answer_kwargs)
            bar.update(len(reqs))
        self.failures += [(*meta[i], reason) for i, reason in failed]
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
