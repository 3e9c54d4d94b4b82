"""The side-by-side runner: every mode on the same samples, one JSONL line per (mode, sample).

Files in the output folder:
- ``run.json``: task, generation settings, modes with all their options, machine; a rerun with
  different settings is refused (a mode may be added).
- ``predictions.rank<R>.jsonl``: what rank R answered, appended and flushed line by line; a
  rerun skips every (mode, sample) already answered in any of these files or in the merged file,
  and drops a truncated last line left by a crash.
- ``predictions.jsonl``: all ranks merged (rank 0, at the end), in sample then mode order.
Data-parallel runs (``accelerate launch``) give rank R the samples R, R + W, R + 2W, ...
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from shirg.errors import ConfigError, ShirgError
from shirg.evaluate import metrics
from shirg.evaluate.data import Sample, task_spec
from shirg.evaluate.evidence import entity_patches, evidence_recall, kept_patches, queried_patch_kept, twin_patch_kept
from shirg.evaluate.modes import ModeSpec
from shirg.evaluate.summary import plot_overlays, summarize, write_summary
from shirg.io import read_jsonl, write_json, write_text
from shirg.model.answer import HiresFailure
from shirg.model.prompt import prompt_token_ids
from shirg.model.visual import selection_for

log = logging.getLogger(__name__)
PRED_FILE = "predictions.jsonl"
RUN_FILE = "run.json"


# ----------------------------------------------------------------------------- JSONL


def repair_jsonl(path: Path) -> None:
    """Cut a partial last line (a crash mid-write) so appending starts on a fresh line."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    keep = data.rfind(b"\n") + 1
    log.warning("%s: dropping a truncated last line (%d bytes)", path, len(data) - keep)
    with open(path, "r+b") as f:
        f.truncate(keep)


def rank_file(out: Path, rank: int) -> Path:
    return out / f"predictions.rank{rank}.jsonl"


def all_records(out: Path) -> list[dict]:
    """The merged file first, then every rank file; the first record of a (mode, id) pair wins."""
    seen, records = set(), []
    for path in [out / PRED_FILE, *sorted(out.glob("predictions.rank*.jsonl"))]:
        for rec in read_jsonl(path):
            key = (rec.get("mode"), rec.get("id"))
            if key not in seen:
                seen.add(key)
                records.append(rec)
    return records


# ----------------------------------------------------------------------------- scoring


def score_sample(task: str, prediction: str, sample: Sample) -> dict[str, float]:
    """Per-sample scores in [0, 1] (corpus CIDEr-D is computed in the summary)."""
    a = sample.answers
    if task == "chartqa":
        return {"relaxed_accuracy": metrics.relaxed_accuracy(prediction, a),
                "exact_match": metrics.exact_match(prediction, a)}
    if task == "docvqa":
        return {"anls": metrics.anls(prediction, a, "standard"), "anls_lmms": metrics.anls(prediction, a, "lmms-eval"),
                "exact_match": metrics.exact_match(prediction, a)}
    if task == "textvqa":
        return {"vqa_accuracy": metrics.vqa_accuracy(prediction, a), "exact_match": metrics.exact_match(prediction, a)}
    if task == "entitygrid":
        s = metrics.entitygrid_score(prediction, a, sample.qtype or "")
        return {"accuracy": s["correct"], "f1": s["f1"]}
    raise ConfigError(f"unknown task {task!r}")


# ----------------------------------------------------------------------------- evidence


def sample_evidence(model, image, sample: Sample, spec: ModeSpec, ans=None,
                    selected: tuple | None = None) -> dict[str, float | None]:
    """Evidence recall (lenient and strict) of one EntityGrid sample; None where undefined. Uses
    ``selected`` = (selection, content box) when given, else the selection the answer kept
    (``ans.selection``) when there is one, else selects again."""
    if not spec.hires or not sample.boxes:
        return {"evidence_recall": None, "evidence_recall_strict": None, "queried_patch_kept": None,
                "twin_patch_kept": None}
    if selected is not None:
        sel, content_box = selected
    elif ans is not None and getattr(ans, "selection", None) is not None:
        sel, content_box = ans.selection, ans.content_box
    else:
        sel, prep = selection_for(model, image, sample.question, spec.mode, spec.options)
        content_box = prep.content_box
    entity = entity_patches(sample.boxes, image.size, content_box, sel.grid)
    strict = kept_patches(sel, strict=True)
    return {"evidence_recall": evidence_recall(entity, kept_patches(sel)),
            "evidence_recall_strict": evidence_recall(entity, strict),
            "queried_patch_kept": queried_patch_kept(sample.meta.get("label_boxes"), image.size, content_box, strict),
            "twin_patch_kept": twin_patch_kept(sample.meta.get("twin_label_boxes"), image.size, content_box, strict)}


# ----------------------------------------------------------------------------- the run


@dataclass
class EvalSettings:
    task: str
    gen: dict  # answer() generation kwargs: gen_length, steps, block_length, temperature, schedule, seed, kv_cache
    batch_size: int = 1
    warmup: int = 1  # discarded answers per mode before timing (compilation, allocator, caches)
    evidence: bool = True  # EntityGrid evidence recall (from the selection each hi-res answer kept)
    prompt_suffix: str | None = None  # None: the task's lmms-eval post-prompt
    weight_format: str = "float"  # the model's weight format (shirg.load(weight_format=...))
    reference: str | None = "full"  # the mode every other is compared with, paired (summary only)
    strict: bool = False  # stop at the first sample that cannot be answered (else: record it as failed, go on)

    def suffix(self) -> str:
        return task_spec(self.task).prompt_suffix if self.prompt_suffix is None else self.prompt_suffix

    def text(self, question: str) -> str:
        """What the model is asked: the task's lmms-eval prompt around the question."""
        return task_spec(self.task).prompt(question, self.suffix())

    def describe(self) -> dict:
        out = {"task": self.task, "gen": dict(self.gen), "prompt_suffix": self.suffix(), "batch_size": self.batch_size}
        if self.weight_format != "float":  # only when used: runs recorded before the option keep comparing equal
            out["weight_format"] = self.weight_format
        return out


def machine_info(device: torch.device | str) -> dict:
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {"device": str(device), "device_name": name, "torch": torch.__version__, "python": platform.python_version(),
            "host_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()}


def check_run_file(out: Path, settings: EvalSettings, modes: Sequence[ModeSpec], write: bool,
                   extra: dict | None = None) -> dict:
    """Refuse to mix settings in one folder; record (and extend) the modes run there."""
    path = out / RUN_FILE
    current = settings.describe()
    modes_now = {m.name: m.describe() for m in modes}
    old = json.loads(path.read_text()) if path.is_file() else None
    if old is not None:
        for key in ("task", "gen", "prompt_suffix"):
            if old["settings"].get(key) != current[key]:
                raise ConfigError(f"{out} holds a run with {key} = {old['settings'].get(key)!r}, this one has "
                                  f"{current[key]!r}; use another --out or the same options to resume")
        for name, desc in modes_now.items():
            prev = old["modes"].get(name)
            if prev is not None and json.loads(json.dumps(prev)) != json.loads(json.dumps(desc)):
                raise ConfigError(f"{out}: mode {name!r} ran with other options before ({prev['options']}); "
                                  "use another --out, or resume with the same visual options")
        before = [i for i in old.get("invocations") or [] if i]
        if extra and before:
            for key in ("model", "adapter"):
                if key in extra and key in before[-1] and before[-1][key] != extra[key]:
                    raise ConfigError(f"{out} holds answers of {key} {before[-1][key]!r}, this run has "
                                      f"{extra[key]!r}; use another --out (answers of different weights "
                                      "would be mixed in one table)")
    run = old or {"settings": current, "modes": {}, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    run["modes"] = {**run["modes"], **modes_now}
    run["mode_order"] = list(dict.fromkeys([*run.get("mode_order", []), *modes_now]))
    if extra:
        run.setdefault("invocations", []).append(extra)
    if write:
        write_json(path, run)
    return run


def run_shard(
    model,
    samples: Sequence[Sample],
    modes: Sequence[ModeSpec],
    out: str | Path,
    settings: EvalSettings,
    rank: int = 0,
    world: int = 1,
    progress: bool = True,
    on_record: Callable[[dict], None] | None = None,
) -> int:
    """Answer this rank's share of (mode, sample) pairs not yet done; returns how many it answered."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mine = list(samples)[rank::world]
    done = {(r.get("mode"), r.get("id")) for r in all_records(out)}
    todo = {m.name: [s for s in mine if (m.name, s.id) not in done] for m in modes}
    total = sum(len(v) for v in todo.values())
    if total == 0:
        return 0
    path = rank_file(out, rank)
    repair_jsonl(path)
    from tqdm import tqdm

    bar = tqdm(total=total, desc=f"eval {settings.task}" + (f" rank {rank}" if world > 1 else ""), unit="ans",
               disable=not progress, position=rank if world > 1 else None)
    answered = 0
    with open(path, "a", encoding="utf-8") as f:
        for spec in modes:
            items = todo[spec.name]
            if not items:
                continue
            gen = dict(settings.gen, options=spec.options, mode=spec.mode)
            bar.set_postfix_str(spec.name)
            for s in items[: settings.warmup]:
                with contextlib.suppress(ShirgError):  # a bad sample is recorded (or stops --strict) below
                    answer_or_fail(model, [s.image()], [settings.text(s.question)], gen)
            for start in range(0, len(items), settings.batch_size):
                batch = items[start : start + settings.batch_size]
                for s, img, ans in answer_batch(model, batch, settings.text, gen, settings.strict):
                    if isinstance(ans, str):
                        rec = failed_record(settings, spec, s, ans, rank)
                    else:
                        rec = make_record(model, settings, spec, s, img, ans, rank)
                    f.write(json.dumps(rec) + "\n")
                    f.flush()
                    answered += 1
                    bar.update(1)
                    if on_record is not None:
                        on_record(rec)
    bar.close()
    return answered


def answer_batch(model, batch: Sequence[Sample], text: Callable[[str], str], gen: dict,
                 strict: bool = False) -> list:
    """(sample, image or None, Answer or the reason it failed) per sample of ``batch``; ``text`` turns a
    question into the prompt text (the task's pre/post prompt).

    A sample whose image cannot be read or whose question cannot be put into the prompt (empty,
    holding ``<image>``, not UTF-8, too long) fails alone, found before answering (recorded, never
    silently dropped), and the others are answered. ``strict``: its error is raised instead. An error
    of the run's own settings (gen length, temperature ...) is never a sample's: it stops the run."""
    images: list = []
    for s in batch:
        try:
            if not isinstance(s.question, str) or not s.question.strip():  # the suffix would hide it
                raise ConfigError(f"the question is empty ({s.question!r}); the data has no question here")
            prompt_token_ids(text(s.question), model.tokenizer)  # the checks answer() makes of a question
            images.append(s.image())
        except ShirgError as e:
            if strict:
                raise
            images.append(_input_failure(e))
    good = [i for i, img in enumerate(images) if not isinstance(img, str)]
    results: list = list(images)
    if good:
        answers = answer_or_fail(model, [images[i] for i in good], [text(batch[i].question) for i in good], gen)
        for i, ans in zip(good, answers, strict=True):
            results[i] = ans
    return [(s, None if isinstance(img, str) else img, res) for s, img, res in zip(batch, images, results,
                                                                                  strict=True)]


def _input_failure(e: ShirgError) -> str:
    reason = str(e) or type(e).__name__
    log.warning("a sample cannot be answered (%s); recorded as a failed answer", reason)
    return reason


def answer_or_fail(model, images: list, questions: list[str], gen: dict) -> list:
    """``model.answer`` for a batch with no fallback; where the high-resolution pass fails the batch is
    answered sample by sample (``answer`` itself already retried a failing batch per sample), and a
    sample that still fails gives its reason (a str) instead of an Answer."""
    try:
        return model.answer(images, questions, **gen)
    except HiresFailure as e:
        if len(images) == 1:
            return [_failure(e)]
    out = []
    for img, q in zip(images, questions, strict=True):
        try:
            out += model.answer([img], [q], **gen)
        except HiresFailure as e:
            out.append(_failure(e))
    return out


def _failure(e: HiresFailure) -> str:
    reason = next(iter(e.reasons.values()))
    log.warning("%s mode failed on a sample (%s); recorded as a failed answer", e.mode, reason)
    return reason


def record_head(settings: EvalSettings, spec: ModeSpec, sample: Sample, prediction: str) -> dict:
    """The fields every per-sample record starts with, answered or failed."""
    return {
        "id": sample.id,
        "mode": spec.name,
        "task": settings.task,
        "type": sample.qtype,
        "question": sample.question,
        "answers": sample.answers,
        "prediction": prediction,
        "scores": score_sample(settings.task, prediction, sample) if sample.answers else None,
        **({"twin_answered": twin_answered(prediction, sample)} if sample.meta.get("twin_labels") else {}),
    }


def twin_answered(prediction: str, sample: Sample) -> float:
    """1.0 when a reading answer names the number of the queried entity's shape twin (same shape, another
    colour, another number) instead of the queried one: the error of a reader that ignores colour."""
    return float(metrics.first_number(prediction) in sample.meta["twin_labels"])


def failed_record(settings: EvalSettings, spec: ModeSpec, sample: Sample, reason: str, rank: int) -> dict:
    """A failed answer (a high-resolution pass that failed, an unreadable image, a bad question): kept in
    the JSONL so a resumed run does not try it again, an empty prediction scored like any other (wrong),
    no cost figures; the summary counts it in ``failures``."""
    rec = {
        **record_head(settings, spec, sample, ""),
        "visual_tokens": None,
        "prompt_length": None,
        "latency_s": None,
        "time_s": {},
        "batch_size": 1,
        "memory_mb": None,
        "memory_kind": None,
        "kv_cache_bytes": None,
        "fallback": False,
        "failed": True,
        "error": reason,
        "rank": rank,
    }
    if settings.task == "entitygrid" and settings.evidence:
        rec |= {"evidence_recall": None, "evidence_recall_strict": None}
    return rec


SUBMISSION_ID = {"docvqa": "questionId", "textvqa": "question_id"}  # as lmms-eval writes them


def write_submissions(task: str, records: Sequence[dict], modes: Sequence[str], out: Path) -> list[Path]:
    """``submission_<mode>.json``: [{questionId | question_id, answer}, ...] in sample order, the
    format the DocVQA / TextVQA evaluation servers take (and lmms-eval writes for their test splits)."""
    if task not in SUBMISSION_ID:
        raise ConfigError(f"{task} has no answer-less split with a submission format; it must be scored")
    key, paths = SUBMISSION_ID[task], []
    for mode in modes:
        rows = [{key: int(r["id"]) if str(r["id"]).isdigit() else r["id"], "answer": r["prediction"]}
                for r in records if r.get("mode") == mode]
        path = out / f"submission_{mode}.json"
        write_json(path, rows)
        paths.append(path)
    return paths


def record_memory(meta: dict) -> tuple[float | None, str | None]:
    """(MiB, kind) of one answer's memory: ``peak_gpu`` (CUDA peak, reset per request),
    ``request_peak_rss`` (CPU: RSS sampled during the request) or, for answer() metadata without a
    per-request figure, ``lifetime_peak_rss`` (the process's peak RSS so far: it depends on what ran before)."""
    if meta.get("peak_gpu_mb") is not None:
        return meta["peak_gpu_mb"], "peak_gpu"
    if meta.get("request_peak_rss_mb") is not None:
        return meta["request_peak_rss_mb"], "request_peak_rss"
    if meta.get("peak_rss_mb") is not None:
        return meta["peak_rss_mb"], "lifetime_peak_rss"
    return None, None


def make_record(model, settings: EvalSettings, spec: ModeSpec, sample: Sample, image, ans, rank: int) -> dict:
    meta = ans.meta
    memory, memory_kind = record_memory(meta)
    rec = {
        **record_head(settings, spec, sample, ans.text),
        "visual_tokens": meta["visual_tokens"],
        "prompt_length": meta["prompt_length"],
        "latency_s": meta["time_s"]["total"] / meta.get("batch_size", 1),
        "time_s": meta["time_s"],
        "batch_size": meta.get("batch_size", 1),
        "memory_mb": memory,
        "memory_kind": memory_kind,
        "kv_cache_bytes": meta.get("kv_cache_bytes"),
        "steps_used": meta.get("steps_used"),
        "weight_format": meta.get("weight_format", "float"),
        "cache": meta.get("cache"),
        "fallback": bool(meta.get("fallback")),
        "rank": rank,
    }
    if meta.get("fallback"):
        rec["fallback_reason"] = meta.get("fallback_reason")
    if settings.task == "entitygrid" and settings.evidence:
        if meta.get("fallback"):
            rec |= {"evidence_recall": None, "evidence_recall_strict": None}
        elif spec.mode == "full":
            rec |= {"evidence_recall": 1.0, "evidence_recall_strict": 1.0} if sample.boxes else {}
            rec |= {"queried_patch_kept": 1.0} if sample.meta.get("label_boxes") else {}
            rec |= {"twin_patch_kept": 1.0} if sample.meta.get("twin_label_boxes") else {}
        else:
            rec |= sample_evidence(model, image, sample, spec, ans)
    return rec


def merge_shards(out: str | Path, samples: Sequence[Sample], modes: Sequence[str]) -> list[dict]:
    """Write ``predictions.jsonl`` from every rank file (sample order, then mode order); remove the
    rank files once the merged file is safely in place. Returns the merged records."""
    out = Path(out)
    records = all_records(out)
    order = {s.id: i for i, s in enumerate(samples)}
    mode_order = {m: i for i, m in enumerate(modes)}
    big = len(order) + len(mode_order) + 1
    records.sort(key=lambda r: (order.get(r["id"], big), mode_order.get(r["mode"], big), str(r["id"]), r["mode"]))
    write_text(out / PRED_FILE, "".join(json.dumps(r) + "\n" for r in records))
    for p in out.glob("predictions.rank*.jsonl"):
        p.unlink()
    return records


def evaluate(
    model,
    samples: Sequence[Sample],
    modes: Sequence[ModeSpec],
    out: str | Path,
    settings: EvalSettings,
    rank: int = 0,
    world: int = 1,
    barrier: Callable[[], None] | None = None,
    overlays: int = 3,
    progress: bool = True,
    invocation: dict | None = None,
    on_record: Callable[[dict], None] | None = None,
    score: bool = True,
) -> dict | None:
    """Run (or resume) this rank's share, then on rank 0 merge, summarize, plot. Returns the summary
    on rank 0, None elsewhere. ``score`` False (a split released without answers): no scores and no
    summary; rank 0 writes the benchmark server's submission file per mode instead."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run = check_run_file(out, settings, modes, write=False)  # every rank refuses a mismatch
    if rank == 0:
        check_run_file(out, settings, modes, write=True, extra=invocation)
    run_shard(model, samples, modes, out, settings, rank, world, progress, on_record)
    if barrier is not None:
        barrier()
    if rank != 0:
        return None
    names = [m for m in run["mode_order"] if m in {s.name for s in modes}]
    records = merge_shards(out, samples, run["mode_order"])
    ids = {s.id for s in samples}
    if not score:
        return {"submissions": [str(p) for p in write_submissions(settings.task, records, names, out)]}
    summary = summarize([r for r in records if r["id"] in ids], settings.task, names, settings.reference)
    summary["run"] = {"settings": run["settings"], "invocation": invocation}
    write_summary(summary, out, title=f"{settings.task}: {len(ids)} samples")
    if overlays:
        plot_overlays(model, samples, modes, out, records, overlays)
    return summary
