"""Training data: LLaVA-format records, mixtures with per-source sampling, converters, batches.

A LLaVA record is ``{"image": "rel/path.png", "conversations": [{"from": "human", "value":
"<image>\\nQ"}, {"from": "gpt", "value": "A"}, ...]}``; every (human, gpt) pair becomes one
:class:`Sample` (the image with that question). A mixture YAML lists sources::

    seed: 0
    sources:
      - {name: chartqa, json: chartqa_train.json, image_root: chartqa/png, sample: all}
      - {name: docvqa, json: docvqa_train.json, image_root: docvqa, sample: "random:20000"}
      - {name: textvqa, json: textvqa_train.json, image_root: textvqa, sample: "first:5000"}
      - {name: extra, json: extra.json, image_root: extra, sample: "25%"}

Relative paths resolve against the mixture file's folder. Sample order, per-sample resolution and
per-sample masking noise are pure functions of (seed, epoch, index), so a resumed or multi-process
run sees exactly the samples, resolutions and masks an uninterrupted single-process run would.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from shirg.errors import ConfigError, ImageError
from shirg.io import write_json
from shirg.llava import IMAGE_TAG, llava_record
from shirg.model.prompt import prompt_token_ids, user_text_ids
from shirg.vision.preprocess import load_image

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    image: str  # absolute or CWD-relative path
    question: str
    answer: str
    source: str = ""
    boxes: tuple[tuple[float, float, float, float], ...] | None = None  # evidence boxes, image pixels


# ----------------------------------------------------------------------------- LLaVA records


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """A JSON list of records, or JSON lines."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"training data file {path} does not exist")
    text = path.read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        try:
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is neither a JSON list nor JSON lines: {e}") from e
    if not isinstance(data, list):
        raise ConfigError(f"{path} must hold a list of LLaVA records, got {type(data).__name__}")
    return data


def records_to_samples(records: Sequence[dict[str, Any]], image_root: str | Path, source: str = "") -> list[Sample]:
    """One sample per (human, gpt) turn pair of each record that has an image."""
    root = Path(image_root)
    out = []
    for r in records:
        if not r.get("image"):
            continue
        turns = r.get("conversations") or []
        boxes = _record_boxes(r)
        for k, (human, gpt) in enumerate(zip(turns[0::2], turns[1::2], strict=False)):
            if human.get("from") != "human" or gpt.get("from") != "gpt":
                raise ConfigError(f"record {r.get('id', '?')}: turns must alternate human, gpt; got {human.get('from')}"
                                  f", {gpt.get('from')}")
            question = human["value"].replace(IMAGE_TAG, "").strip()
            if question and gpt["value"].strip():
                out.append(Sample(str(root / r["image"]), question, gpt["value"].strip(), source,
                                  boxes if k == 0 else None))
    return out


def _record_boxes(record: dict[str, Any]) -> tuple[tuple[float, float, float, float], ...] | None:
    """A record's optional ``boxes`` (the first answer's evidence, [x0, y0, x1, y1] image pixels)."""
    boxes = record.get("boxes")
    if boxes is None:
        return None
    ok = isinstance(boxes, list) and all(
        isinstance(b, list | tuple) and len(b) == 4 and all(isinstance(v, int | float) for v in b)
        and b[2] > b[0] and b[3] > b[1] for b in boxes)
    if not ok:
        raise ConfigError(f"record {record.get('id', '?')}: boxes must be a list of [x0, y0, x1, y1] with x1 > x0 "
                          f"and y1 > y0, got {str(boxes)[:80]}")
    return tuple(tuple(float(v) for v in b) for b in boxes)


def apply_sampling(items: list, spec: str | int | None, seed: int, name: str) -> list:
    """``all``; ``first:N``; ``random:N`` (seeded); ``P%`` (seeded random P percent)."""
    if spec in (None, "all"):
        return list(items)
    spec = str(spec).strip()
    rng = random.Random(f"{seed}:{name}")
    try:
        if spec.startswith("first:"):
            return list(items[: int(spec[6:])])
        if spec.startswith("random:"):
            n = int(spec[7:])
            return [items[i] for i in sorted(rng.sample(range(len(items)), min(n, len(items))))]
        if spec.endswith("%"):
            n = round(len(items) * float(spec[:-1]) / 100)
            return [items[i] for i in sorted(rng.sample(range(len(items)), n))]
    except ValueError as e:
        raise ConfigError(f"source {name!r}: bad sample spec {spec!r} ({e})") from e
    raise ConfigError(f"source {name!r}: sample must be all, first:N, random:N or P%, got {spec!r}")


def load_sources(sources: Sequence[dict[str, Any]], base_dir: str | Path = ".", seed: int = 0) -> list[Sample]:
    """Samples of every source, sampled per source (on records), in source order."""
    base = Path(base_dir)
    out: list[Sample] = []
    for i, src in enumerate(sources):
        unknown = set(src) - {"name", "json", "image_root", "sample"}
        if unknown or "json" not in src:
            raise ConfigError(f"mixture source {i}: needs 'json' (and optional name, image_root, sample); "
                              f"unknown keys {sorted(unknown)}")
        name = src.get("name") or Path(src["json"]).stem
        records = apply_sampling(read_records(base / src["json"]), src.get("sample"), seed, name)
        samples = records_to_samples(records, base / src.get("image_root", "."), name)
        log.info("source %s: %d records -> %d samples", name, len(records), len(samples))
        out.extend(samples)
    return out


def load_mixture(path: str | Path, seed: int | None = None) -> list[Sample]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"mixture file {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or not data.get("sources"):
        raise ConfigError(f"{path}: a mixture needs a 'sources' list")
    return load_sources(data["sources"], path.parent, data.get("seed", 0) if seed is None else seed)


# ----------------------------------------------------------------------------- converters


def _most_common(answers: Sequence[str]) -> str:
    return Counter(a.strip() for a in answers).most_common(1)[0][0]


def convert_chartqa(json_files: Sequence[str | Path], image_dir: str = "png") -> list[dict[str, Any]]:
    """ChartQA's train_human.json / train_augmented.json ({imgname, query, label})."""
    out = []
    for f in json_files:
        for i, r in enumerate(json.loads(Path(f).read_text())):
            out.append(llava_record(f"{image_dir}/{r['imgname']}", r["query"], str(r["label"]), f"{Path(f).stem}-{i}"))
    return out


def convert_docvqa(json_file: str | Path) -> list[dict[str, Any]]:
    """DocVQA's train_v1.0.json ({"data": [{questionId, question, image, answers}]})."""
    data = json.loads(Path(json_file).read_text())["data"]
    return [llava_record(r["image"], r["question"], r["answers"][0], str(r["questionId"])) for r in data]


def convert_textvqa(json_file: str | Path, image_dir: str = "train_images") -> list[dict[str, Any]]:
    """TextVQA_0.5.1_train.json ({"data": [{question_id, question, image_id, answers}]}): the majority answer."""
    data = json.loads(Path(json_file).read_text())["data"]
    return [llava_record(f"{image_dir}/{r['image_id']}.jpg", r["question"], _most_common(r["answers"]),
                         str(r["question_id"])) for r in data]


def convert_parquet(files: Sequence[str | Path], image_out: str | Path) -> list[dict[str, Any]]:
    """Hugging Face parquet shards with an image column ({bytes, path}) and question / query plus
    answer / answers / label columns. Images are written under ``image_out`` (named by content hash);
    record image paths are relative to it."""
    import pyarrow.parquet as pq

    out_dir = Path(image_out)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for f in files:
        table = pq.read_table(str(f))
        cols = set(table.column_names)
        qcol = next((c for c in ("question", "query") if c in cols), None)
        acol = next((c for c in ("answer", "answers", "label") if c in cols), None)
        if qcol is None or acol is None or "image" not in cols:
            raise ConfigError(f"{f}: needs image, question/query and answer/answers/label columns; has {sorted(cols)}")
        for i, row in enumerate(table.select(["image", qcol, acol]).to_pylist()):
            img = row["image"]
            data = img.get("bytes") if isinstance(img, dict) else img
            if not data:
                log.warning("%s row %d: no image bytes, skipped", f, i)
                continue
            answer = row[acol]
            if isinstance(answer, list):
                answer = _most_common([str(a) for a in answer]) if answer else ""
            suffix = Path(img.get("path") or "x.png").suffix if isinstance(img, dict) else ".png"
            name = hashlib.sha1(data).hexdigest()[:20] + (suffix or ".png")
            if not (out_dir / name).is_file():
                (out_dir / name).write_bytes(data)
            records.append(llava_record(name, str(row[qcol]), str(answer), f"{Path(f).stem}-{i}"))
    return records


# ----------------------------------------------------------------------------- batches


def snap_resolution(resolution: int, snap: int) -> int:
    return max(snap, round(resolution / snap) * snap) if snap else resolution


def _seed(*parts: int) -> int:
    digest = hashlib.blake2b(":".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 62) - 1)


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The sample order of one epoch: a permutation from (seed, epoch) only."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(_seed(seed, epoch, 0xE))).tolist()


@dataclass
class Batch:
    """Per-process micro-batch. ``answer_ids`` [B, La] long; ``noise_seeds`` seed each sample's masking."""

    images: list
    questions: list[str]
    prompt_ids: list[list[int]]
    answer_ids: torch.Tensor
    resolutions: list[int]
    noise_seeds: list[int]
    modes: list[str] | None = None  # per-sample visual mode (None: the loss module's one mode)
    ks: list[int] | None = None  # per-sample high-detail budget K (None: the visual options' k)
    boxes: list | None = None  # per sample: (evidence boxes, (width, height)) or None; see Sample.boxes
    patch_targets: torch.Tensor | None = None  # [B, heads, G * G] labels of the hi-detail patches (data.patch_aux)
    skipped: int = 0
    truncated: int = 0

    def __len__(self) -> int:
        return len(self.images)


class TrainDataset(torch.utils.data.Dataset):
    """Index (epoch, i) -> encoded sample, or a skip notice for an unreadable image."""

    def __init__(self, samples: Sequence[Sample], tokenizer, *, answer_length: int, eos_id: int,
                 eot_id: int | None, resolutions: Sequence[int], snap: int, seed: int,
                 modes: Sequence[str] | None = None, budgets: Sequence[int] | None = None,
                 patch_targets: Callable[[int, int], torch.Tensor] | None = None) -> None:
        self.samples = list(samples)
        # (sample index, resolution) -> labels of its hi-detail patches (data.patch_aux); None: no labels
        self.patch_targets = patch_targets
        self.tokenizer = tokenizer
        self.answer_length = answer_length
        self.eos_id, self.eot_id = eos_id, eot_id
        self.resolutions = [snap_resolution(r, snap) for r in resolutions]
        self.seed = seed
        self.modes = list(modes or [])
        self.budgets = list(budgets or [])

    def __len__(self) -> int:
        return len(self.samples)

    def encode_answer(self, answer: str) -> tuple[list[int], bool]:
        ids = user_text_ids(answer, self.tokenizer)  # data text: control-token strings stay plain text
        if self.eot_id is not None:
            ids = ids + [self.eot_id]
        truncated = len(ids) > self.answer_length
        ids = ids[: self.answer_length]
        return ids + [self.eos_id] * (self.answer_length - len(ids)), truncated

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:

        epoch, i = key
        s = self.samples[i]
        try:
            image = load_image(s.image)
        except ImageError as e:
            return {"skip": f"{e}"}
        answer, truncated = self.encode_answer(s.answer)
        rng = random.Random(_seed(self.seed, epoch, i, 0xA))
        resolution = rng.choice(self.resolutions)
        item = {
            "image": image,
            "question": s.question,
            "prompt_ids": prompt_token_ids(s.question, self.tokenizer),
            "answer_ids": answer,
            "truncated": truncated,
            "resolution": resolution,
            "noise_seed": _seed(self.seed, epoch, i, 0xB),
            "boxes": (s.boxes, image.size) if s.boxes else None,
        }
        if len(self.modes) > 1:  # drawn after the resolution, so one-mode runs keep their draws
            item["mode"] = rng.choice(self.modes)
        if self.budgets:  # drawn last, so runs without budgets keep their draws
            item["k"] = rng.choice(self.budgets)
        if self.patch_targets is not None:
            item["patch_targets"] = self.patch_targets(i, resolution)
        return item


def collate(items: list[dict[str, Any]]) -> Batch:
    kept = [x for x in items if "skip" not in x]
    for x in items:
        if "skip" in x:
            log.warning("skipping a training sample: %s", x["skip"])
    answer = (torch.tensor([x["answer_ids"] for x in kept], dtype=torch.long) if kept
              else torch.zeros((0, 0), dtype=torch.long))  # every image unreadable: an empty micro-batch
    return Batch(
        images=[x["image"] for x in kept],
        questions=[x["question"] for x in kept],
        prompt_ids=[x["prompt_ids"] for x in kept],
        answer_ids=answer,
        resolutions=[x["resolution"] for x in kept],
        noise_seeds=[x["noise_seed"] for x in kept],
        modes=[x["mode"] for x in kept] if kept and "mode" in kept[0] else None,
        ks=[x["k"] for x in kept] if kept and "k" in kept[0] else None,
        boxes=[x.get("boxes") for x in kept],
        patch_targets=torch.stack([x["patch_targets"] for x in kept]) if kept and "patch_targets" in kept[0] else None,
        skipped=len(items) - len(kept),
        truncated=sum(bool(x["truncated"]) for x in kept),
    )


class PositionSampler(torch.utils.data.Sampler):
    """Micro-batches of (epoch, index) keys for one process, from global micro-step ``start`` on.

    Global micro-step m covers positions [m * G, (m + 1) * G) of epoch m // per_epoch's order,
    G = batch_size * num_processes; process r takes the r-th slice of batch_size. The last partial
    global batch of an epoch is dropped, so every process always has the same number of steps.
    """

    def __init__(self, n: int, batch_size: int, num_processes: int, rank: int, seed: int, start: int = 0,
                 stop: int | None = None) -> None:
        self.n, self.batch_size, self.world, self.rank, self.seed = n, batch_size, num_processes, rank, seed
        self.global_batch = batch_size * num_processes
        self.per_epoch = n // self.global_batch
        if self.per_epoch == 0:
            raise ConfigError(f"{n} samples cannot fill one global batch of {self.global_batch} "
                              f"({batch_size} x {num_processes} processes); lower run.batch_size")
        self.start, self.stop = start, stop

    def position(self, micro_step: int) -> tuple[int, int]:
        """(epoch, first sample position in that epoch's order) of a global micro-step."""
        return micro_step // self.per_epoch, (micro_step % self.per_epoch) * self.global_batch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        m = self.start
        order_epoch, order = -1, []
        while self.stop is None or m < self.stop:
            epoch, pos = self.position(m)
            if epoch != order_epoch:
                order_epoch, order = epoch, epoch_order(self.n, self.seed, epoch)
            lo = pos + self.rank * self.batch_size
            yield [(epoch, i) for i in order[lo : lo + self.batch_size]]
            m += 1

    def __len__(self) -> int:
        return (self.stop - self.start) if self.stop is not None else 2**62


# ----------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    """``python -m shirg.train.data {chartqa,docvqa,textvqa,parquet} ... --out train.json``"""
    p = argparse.ArgumentParser(prog="python -m shirg.train.data", description="convert datasets to LLaVA records")
    p.add_argument("format", choices=["chartqa", "docvqa", "textvqa", "parquet"])
    p.add_argument("inputs", nargs="+", help="the dataset's train JSON file(s) or parquet shards")
    p.add_argument("--out", required=True, help="LLaVA JSON to write")
    p.add_argument("--image-dir", default=None, help="chartqa: png folder name; textvqa: image folder name; "
                   "parquet: folder to write images into (default: next to --out)")
    a = p.parse_args(argv)
    if a.format == "chartqa":
        records = convert_chartqa(a.inputs, a.image_dir or "png")
    elif a.format == "docvqa":
        records = [r for f in a.inputs for r in convert_docvqa(f)]
    elif a.format == "textvqa":
        records = [r for f in a.inputs for r in convert_textvqa(f, a.image_dir or "train_images")]
    else:
        records = convert_parquet(a.inputs, a.image_dir or Path(a.out).parent / "images")
    write_json(a.out, records)
    print(f"wrote {len(records)} records to {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
