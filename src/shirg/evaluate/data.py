"""Benchmark loaders for local files: ChartQA, DocVQA (val), TextVQA (val), EntityGrid.

Two layouts per public benchmark: the original release (JSON + image folder) and the Hugging Face
parquet layout (one row per question with the image bytes inline). Parquet images are read lazily,
one row group at a time, so a 5 GB DocVQA split never sits in memory.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from PIL import Image

from shirg.entitygrid import QUESTIONS_FILE
from shirg.errors import ConfigError
from shirg.io import read_jsonl
from shirg.vision.preprocess import load_image, open_image_bytes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    gen_length: int  # answer slots (docs/lavida_facts.md section 4: ChartQA 16, DocVQA 32)
    split: str  # default split of the parquet layout
    primary: str  # the score the summary sorts and compares by
    prompt_suffix: str  # lmms-eval's post-prompt for the task
    layouts: tuple[str, ...]  # human-readable expected layouts, for errors and docs
    pre_prompt: str = ""  # lmms-eval's pre-prompt for the task
    capitalize: bool = False  # lmms-eval's TextVQA sends question.capitalize() (first letter up, rest lower)

    def prompt(self, question: str, suffix: str | None = None) -> str:
        """The text lmms-eval's task builds from a question: pre-prompt + question + post-prompt."""
        q = question.capitalize() if self.capitalize else question
        return f"{self.pre_prompt}{q}{self.prompt_suffix if suffix is None else suffix}"


TASKS: dict[str, TaskSpec] = {
    "chartqa": TaskSpec(
        "chartqa", 16, "test", "relaxed_accuracy", "\nAnswer the question with a single word.",
        ("original: test/test_human.json + test/test_augmented.json + test/png/ (ChartQA release; "
         "the folder may also be test/ itself)",
         "parquet: *.parquet with columns query|question, label|answer(s), image (HuggingFaceM4/ChartQA, "
         "lmms-lab/ChartQA)")),
    "docvqa": TaskSpec(
        "docvqa", 32, "validation", "anls", "\nAnswer the question using a single word or phrase.",
        ("original: val/val_v1.0.json (or val_v1.0_withQT.json) + val/documents/ (DocVQA 2020 release), or "
         "spdocvqa_qas/val_v1.0_withQT.json + spdocvqa_images/ (current official download)",
         "parquet: *.parquet with columns question, answers, image (lmms-lab/DocVQA, config DocVQA)")),
    "textvqa": TaskSpec(
        "textvqa", 16, "validation", "vqa_accuracy", "\nAnswer the question using a single word or phrase.",
        ("original: TextVQA_0.5.1_val.json + train_images/<image_id>.jpg (TextVQA release; "
         "train_val_images/train_images/ also found)",
         "parquet: *.parquet with columns question, answers, image (lmms-lab/textvqa, facebook/textvqa)"),
        capitalize=True),
    "entitygrid": TaskSpec(
        "entitygrid", 32, "", "f1", "",
        ("generated: questions.jsonl + images/ written by `shirg entitygrid --out DIR`",)),
}


def task_spec(task: str) -> TaskSpec:
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    return TASKS[task]


@dataclass
class Sample:
    """One question. ``boxes``: the queried entities in image pixels [x0, y0, x1, y1] (EntityGrid)."""

    id: str
    question: str
    answers: list[str]
    image_ref: Any  # a path, or a ParquetImage
    qtype: str | None = None
    boxes: list[list[float]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def image(self) -> Image.Image:
        if isinstance(self.image_ref, ParquetImage):
            return self.image_ref.load()
        return load_image(self.image_ref)


# ----------------------------------------------------------------------------- parquet


@dataclass(frozen=True)
class ParquetImage:
    path: str
    row: int  # row index within the file
    column: str

    def load(self) -> Image.Image:
        value = _row_group_images(self.path, self.column, *_locate(self.path, self.row))
        if isinstance(value, dict):
            data = value.get("bytes")
            if data is None and value.get("path"):
                return load_image(Path(self.path).parent / value["path"])
        else:
            data = value
        if not data:
            raise ConfigError(f"{self.path} row {self.row}: the {self.column!r} cell holds no image bytes")
        return open_image_bytes(bytes(data), f"{self.path} row {self.row}")


@lru_cache(maxsize=64)
def _row_group_offsets(path: str) -> tuple[int, ...]:
    import pyarrow.parquet as pq

    md = pq.ParquetFile(path).metadata
    offsets, total = [], 0
    for i in range(md.num_row_groups):
        offsets.append(total)
        total += md.row_group(i).num_rows
    return tuple(offsets)


def _locate(path: str, row: int) -> tuple[int, int]:
    offsets = _row_group_offsets(path)
    group = max(i for i, off in enumerate(offsets) if off <= row)
    return group, row - offsets[group]


def _row_group_images(path: str, column: str, group: int, offset: int):
    return _read_group(path, column, group)[offset]


@lru_cache(maxsize=2)
def _read_group(path: str, column: str, group: int) -> list:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).read_row_group(group, columns=[column]).column(column).to_pylist()


def _first(columns: list[str], *names: str) -> str | None:
    return next((n for n in names if n in columns), None)


def _as_answers(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


SPLIT_ALIASES = {"validation": ("validation", "val"), "val": ("validation", "val"), "test": ("test",),
                 "train": ("train",)}


def _split_files(files: list[Path], split: str) -> list[Path]:
    """Files of the split: name starts with it (HF's ``validation-00000-of-00003.parquet``) or a
    folder on the path is named after it; files naming no known split at all are taken as they are."""
    tokens = SPLIT_ALIASES.get(split, (split,))
    known = {t for ts in SPLIT_ALIASES.values() for t in ts}

    def names(f: Path) -> list[str]:
        return [f.stem.split("-")[0].split("_")[0].lower()] + [p.lower() for p in f.parent.parts[-2:]]

    chosen = [f for f in files if any(n in tokens for n in names(f))]
    if chosen:
        return chosen
    if not any(n in known for f in files for n in names(f)):
        return files
    raise ConfigError(f"no parquet file of split {split!r} among {', '.join(f.name for f in files[:6])}; "
                      "pass --split with one of the splits present")


# Per task: columns one of which a parquet file must have, and columns that belong to another dataset
# (TextVQA's image_id / ocr_tokens, DocVQA's questionId, InfographicVQA's answer_type / image_url,
# ChartQA's query / label / human_or_machine), so that --task docvqa never scores TextVQA rows.
PARQUET_SIGNATURE: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "docvqa": (("questionId",), ("question_id", "image_id", "ocr_tokens", "query", "label", "human_or_machine",
                                 "answer_type", "image_url")),
    "textvqa": (("question_id", "image_id"), ("questionId", "query", "label", "human_or_machine", "answer_type")),
    "chartqa": (("query", "label", "human_or_machine", "type", "answer"),
                ("questionId", "question_id", "image_id", "ocr_tokens", "answer_type")),
}


def check_parquet_columns(task: str, path: Path, columns: list[str]) -> None:
    need, foreign = PARQUET_SIGNATURE.get(task, ((), ()))
    wrong = [c for c in foreign if c in columns]
    if wrong or (need and not any(c in columns for c in need)):
        why = (f"has {', '.join(wrong)} (another dataset's columns)" if wrong
               else f"has none of {', '.join(need)}")
        raise ConfigError(f"{path} does not look like {task} parquet: it {why}; its columns are {columns}. "
                          "Point --data at the task's own files or pick the matching --task")


def chartqa_type(value) -> str | None:
    """ChartQA's question source under one name: ``human`` or ``augmented`` (the release's file names;
    lmms-lab's ``human_test`` / ``augmented_test``; HuggingFaceM4's human_or_machine 0 / 1)."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text in ("0", "human") or text.startswith("human"):
        return "human"
    if text in ("1", "machine", "augmented") or text.startswith(("augmented", "machine")):
        return "augmented"
    return text


def _docvqa_config_files(files: list[Path], root: Path) -> list[Path]:
    """Within a whole lmms-lab/DocVQA download (folders below ``root``), only the ``DocVQA``
    config's files (never the ``InfographicVQA`` folder next to it)."""
    def below(f: Path) -> list[str]:
        return [p.lower() for p in f.relative_to(root).parts[:-1]]

    files = [f for f in files if "infographicvqa" not in below(f)]
    own = [f for f in files if "docvqa" in below(f)]
    return own or files


def load_parquet(task: str, files: list[Path], split: str, root: Path | None = None) -> list[Sample]:
    import pyarrow.parquet as pq

    if task == "docvqa" and root is not None:
        files = _docvqa_config_files(files, root)
    samples = []
    for f in sorted(_split_files(files, split)):
        schema_cols = pq.ParquetFile(f).schema_arrow.names
        q_col = _first(schema_cols, "question", "query")
        a_col = _first(schema_cols, "answers", "answer", "label")
        img_col = _first(schema_cols, "image", "img")
        if not (q_col and a_col and img_col):
            raise ConfigError(f"{f} has columns {schema_cols}; a {task} parquet file needs a question "
                              "(question|query), answers (answers|answer|label) and image column")
        check_parquet_columns(task, f, schema_cols)
        id_col = _first(schema_cols, "questionId", "question_id", "id")
        type_col = _first(schema_cols, "type", "human_or_machine", "question_types")
        cols = [c for c in (q_col, a_col, id_col, type_col) if c]
        table = pq.read_table(f, columns=cols).to_pylist()
        for row, rec in enumerate(table):
            sid = str(rec[id_col]) if id_col else f"{f.stem}-{row}"
            qtype = rec.get(type_col) if type_col else None
            qtype = str(qtype) if isinstance(qtype, (str, int)) else None
            if task == "chartqa":
                qtype = chartqa_type(qtype)
            samples.append(Sample(id=sid, question=str(rec[q_col]), answers=_as_answers(rec[a_col]),
                                  image_ref=ParquetImage(str(f), row, img_col), qtype=qtype))
    return samples


# ----------------------------------------------------------------------------- original layouts


def _read_json(path: Path, task: str, layout: str):
    """A release JSON file, or a ConfigError naming the file and the layout expected of it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid JSON ({e}); a {task} file here should be {layout}") from None


def _records(path: Path, task: str, layout: str, data, key: str | None, fields: tuple[str, ...]):
    """The list of question records (``data[key]``, or ``data`` itself), each checked for ``fields``;
    a ConfigError names the file, the record and the expected layout otherwise."""
    if key is not None:
        if not isinstance(data, dict) or key not in data:
            raise ConfigError(f"{path} has no top-level {key!r} key; a {task} file here should be {layout}")
        data = data[key]
    if not isinstance(data, list):
        raise ConfigError(f"{path}: expected a list of question records, found {type(data).__name__}; "
                          f"a {task} file here should be {layout}")
    for i, rec in enumerate(data):
        missing = [f for f in fields if not isinstance(rec, dict) or f not in rec]
        if missing:
            raise ConfigError(f"{path}: record {i} lacks {', '.join(repr(m) for m in missing)}; "
                              f"a {task} file here should be {layout}")
    return data


CHARTQA_JSON = 'a JSON list of {"imgname", "query", "label"} records (ChartQA release)'
DOCVQA_JSON = ('a JSON object {"data": [{"questionId", "question", "image", "answers"}, ...]} '
               "(DocVQA release, val_v1.0.json)")
TEXTVQA_JSON = ('a JSON object {"data": [{"question_id", "question", "image_id", "answers"}, ...]} '
                "(TextVQA release, TextVQA_0.5.1_val.json)")
ENTITYGRID_JSONL = ('JSON lines {"id", "question", "answers", "image", "type", ...} written by '
                    "`shirg entitygrid --out DIR`")


def _find(root: Path, candidates: list[str]) -> Path | None:
    return next((root / c for c in candidates if (root / c).is_file()), None)


def load_chartqa_original(root: Path, split: str) -> list[Sample] | None:
    split = "val" if split == "validation" else split
    for base in (root / split, root):
        files = [base / f"{split}_human.json", base / f"{split}_augmented.json"]
        if any(f.is_file() for f in files) and (base / "png").is_dir():
            samples = []
            for f in files:
                if not f.is_file():
                    continue
                kind = f.stem.split("_")[-1]
                recs = _records(f, "chartqa", CHARTQA_JSON, _read_json(f, "chartqa", CHARTQA_JSON), None,
                                ("imgname", "query", "label"))
                for i, rec in enumerate(recs):
                    samples.append(Sample(id=f"{kind}-{i}", question=rec["query"], answers=_as_answers(rec["label"]),
                                          image_ref=base / "png" / rec["imgname"], qtype=kind))
            return samples
    return None


def _docvqa_image(base: Path, root: Path, name: str) -> Path:
    """Where a DocVQA record's image is: ``base/<image>`` (2020 package: val/documents/...), else the
    current official download's ``spdocvqa_images/<file>`` next to ``spdocvqa_qas/``."""
    direct = base / name
    if direct.is_file():
        return direct
    for folder in (base.parent / "spdocvqa_images", root / "spdocvqa_images", base / "spdocvqa_images"):
        if (folder / Path(name).name).is_file():
            return folder / Path(name).name
    return direct


def load_docvqa_original(root: Path, split: str) -> list[Sample] | None:
    split = "val" if split == "validation" else split
    for base in (root / split, root / "spdocvqa_qas", root):
        f = _find(base, [f"{split}_v1.0_withQT.json", f"{split}_v1.0.json"])
        if f is not None:
            data = _records(f, "docvqa", DOCVQA_JSON, _read_json(f, "docvqa", DOCVQA_JSON), "data",
                            ("questionId", "question", "image"))
            return [Sample(id=str(r["questionId"]), question=r["question"], answers=_as_answers(r.get("answers")),
                           image_ref=_docvqa_image(base, root, r["image"]),
                           qtype=(r.get("question_types") or [None])[0])
                    for r in data]
    return None


def load_textvqa_original(root: Path, split: str) -> list[Sample] | None:
    split = "val" if split == "validation" else split
    f = _find(root, [f"TextVQA_0.5.1_{split}.json", f"annotations/TextVQA_0.5.1_{split}.json"])
    if f is None:
        return None
    image_dir = next((d for d in (root / "train_images", root / "train_val_images" / "train_images",
                                  root / "images") if d.is_dir()), None)
    if image_dir is None:
        raise ConfigError(f"found {f.name} but no image folder: expected {root / 'train_images'} "
                          f"or {root / 'train_val_images' / 'train_images'}")
    data = _records(f, "textvqa", TEXTVQA_JSON, _read_json(f, "textvqa", TEXTVQA_JSON), "data",
                    ("question_id", "question", "image_id"))
    return [Sample(id=str(r["question_id"]), question=r["question"], answers=_as_answers(r.get("answers")),
                   image_ref=image_dir / f"{r['image_id']}.jpg") for r in data]


def load_entitygrid(root: Path, split: str = "") -> list[Sample] | None:
    f = root / QUESTIONS_FILE
    if not f.is_file():
        return None
    recs = _records(f, "entitygrid", ENTITYGRID_JSONL, read_jsonl(f), None, ("id", "question", "answers", "image",
                                                                             "type"))
    return [Sample(id=r["id"], question=r["question"], answers=_as_answers(r["answers"]), image_ref=root / r["image"],
                   qtype=r["type"], boxes=r.get("boxes", []),
                   meta={"grid": r.get("grid"), "label_boxes": _label_boxes(r),
                         "twin_label_boxes": _twin_label_boxes(r), "twin_labels": _twin_labels(r)})
            for r in recs]


def _label_boxes(record: dict) -> list[list[float]]:
    """The queried entities' number boxes (``label_box`` in the scene; empty for sets written before it)."""
    scene = {(e.get("row"), e.get("col")): e for e in record.get("scene") or [] if isinstance(e, dict)}
    boxes = [scene.get((t.get("row"), t.get("col")), {}).get("label_box") for t in record.get("targets") or []
             if isinstance(t, dict)]
    return [b for b in boxes if isinstance(b, list) and len(b) == 4] if boxes and all(boxes) else []


def _shape_twins(record: dict) -> list[dict]:
    """The queried entity's shape twins: the other entities of its shape, in another colour (the look-alike
    a reader that ignores colour confuses it with); empty without a scene or with several queried."""
    entities = [e for e in record.get("scene") or [] if isinstance(e, dict)]
    where = {(t.get("row"), t.get("col")) for t in record.get("targets") or [] if isinstance(t, dict)}
    queried = [e for e in entities if (e.get("row"), e.get("col")) in where]
    if len(queried) != 1:
        return []
    q = queried[0]
    return [e for e in entities if e.get("shape") == q.get("shape") and e.get("colour") != q.get("colour")]


def _twin_label_boxes(record: dict) -> list[list[float]]:
    """The number boxes of the queried entity's shape twins."""
    boxes = [e.get("label_box") for e in _shape_twins(record)]
    return [b for b in boxes if isinstance(b, list) and len(b) == 4]


def _twin_labels(record: dict) -> list[str]:
    """The numbers of a reading question's shape twins that differ from its answer (as the answer is
    written); empty for other question types."""
    if record.get("type") != "reading":
        return []
    gold = {str(a).strip() for a in _as_answers(record.get("answers"))}
    return sorted({str(e["label"]) for e in _shape_twins(record) if "label" in e} - gold)


ORIGINAL_LOADERS: dict[str, Callable[[Path, str], list[Sample] | None]] = {
    "chartqa": load_chartqa_original,
    "docvqa": load_docvqa_original,
    "textvqa": load_textvqa_original,
    "entitygrid": load_entitygrid,
}


def load_samples(task: str, data: str | Path, split: str | None = None, limit: int | None = None) -> list[Sample]:
    """The task's samples in file order (the first ``limit`` when given); every mode gets these."""
    spec = task_spec(task)
    root = Path(data)
    if not root.is_dir():
        raise ConfigError(f"--data {root} is not a folder")
    split = split or spec.split
    samples = ORIGINAL_LOADERS[task](root, split)
    if samples is None and task != "entitygrid":
        parquet = sorted(root.rglob("*.parquet"))
        if parquet:
            samples = load_parquet(task, parquet, split, root)
    if samples is None:
        layouts = "\n  - ".join(spec.layouts)
        raise ConfigError(f"{root} matches no {task} layout; expected one of:\n  - {layouts}")
    if not samples:
        raise ConfigError(f"{root} holds a {task} layout but no questions")
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{root}: question ids repeat; every sample needs a unique id")
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"--limit must be at least 1, got {limit}")
        samples = samples[:limit]
    missing = [s for s in samples if isinstance(s.image_ref, Path) and not s.image_ref.is_file()]
    if missing:
        raise ConfigError(f"{root}: {len(missing)} of {len(samples)} images are missing, e.g. {missing[0].image_ref} "
                          f"(sample {missing[0].id}); put the images where the {task} layout expects them")
    return samples


def has_answers(samples: list[Sample]) -> bool:
    """False for a split released without answers (DocVQA / TextVQA test): it cannot be scored here."""
    return any(s.answers for s in samples)
