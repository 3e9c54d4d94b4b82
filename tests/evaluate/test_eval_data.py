"""Loaders on small fixtures written in the original and the Hugging Face parquet layouts."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from shirg.errors import ConfigError
from shirg.evaluate.data import load_samples


def _png(colour=(200, 10, 10), size=(40, 30)) -> Image.Image:
    return Image.new("RGB", size, colour)


def _png_bytes(colour) -> bytes:
    buf = io.BytesIO()
    _png(colour).save(buf, format="PNG")
    return buf.getvalue()


def write_parquet(path: Path, rows: list[dict], row_group_size: int = 2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)


def test_chartqa_original(tmp_path):
    base = tmp_path / "ChartQA" / "test"
    (base / "png").mkdir(parents=True)
    _png().save(base / "png" / "a.png")
    (base / "test_human.json").write_text(json.dumps([{"imgname": "a.png", "query": "Max?", "label": "12"}]))
    (base / "test_augmented.json").write_text(json.dumps([{"imgname": "a.png", "query": "Min?", "label": "3"}]))
    samples = load_samples("chartqa", tmp_path / "ChartQA")
    assert [(s.id, s.question, s.answers, s.qtype) for s in samples] == [
        ("human-0", "Max?", ["12"], "human"), ("augmented-0", "Min?", ["3"], "augmented")]
    assert samples[0].image().size == (40, 30)


def test_docvqa_original(tmp_path):
    base = tmp_path / "val"
    (base / "documents").mkdir(parents=True)
    _png().save(base / "documents" / "d1.png")
    data = {"dataset_name": "docvqa", "data": [
        {"questionId": 7, "question": "Date?", "image": "documents/d1.png", "answers": ["1 May", "May 1"]}]}
    (base / "val_v1.0.json").write_text(json.dumps(data))
    (s,) = load_samples("docvqa", tmp_path)
    assert (s.id, s.answers) == ("7", ["1 May", "May 1"])
    assert s.image().size == (40, 30)


def test_textvqa_original(tmp_path):
    (tmp_path / "train_images").mkdir()
    _png().save(tmp_path / "train_images" / "img9.jpg")
    data = {"data": [{"question_id": 3, "image_id": "img9", "question": "Brand?", "answers": ["acme"] * 10}]}
    (tmp_path / "TextVQA_0.5.1_val.json").write_text(json.dumps(data))
    (s,) = load_samples("textvqa", tmp_path)
    assert (s.id, s.question, len(s.answers)) == ("3", "Brand?", 10)
    assert s.image().size == (40, 30)


@pytest.mark.parametrize("task", ["chartqa", "docvqa", "textvqa"])
def test_parquet_layout_reads_lazily_across_row_groups(tmp_path, task):
    colours = [(i * 40, 0, 0) for i in range(5)]
    if task == "chartqa":  # HuggingFaceM4/ChartQA: query, label (list), image struct, no id
        rows = [{"query": f"q{i}", "label": [str(i)], "image": {"bytes": _png_bytes(c), "path": None}}
                for i, c in enumerate(colours)]
        split = "test"
    else:  # lmms-lab DocVQA / textvqa: question, answers, image struct, an id column
        rows = [{"questionId" if task == "docvqa" else "question_id": i, "question": f"q{i}", "answers": [str(i), "x"],
                 "image": {"bytes": _png_bytes(c), "path": None}} for i, c in enumerate(colours)]
        split = "validation"
    write_parquet(tmp_path / "data" / f"{split}-00000-of-00001.parquet", rows)
    write_parquet(tmp_path / "data" / "train-00000-of-00001.parquet", rows[:1])  # another split: ignored
    samples = load_samples(task, tmp_path)
    assert [s.question for s in samples] == [f"q{i}" for i in range(5)]
    assert samples[3].answers[0] == "3"
    assert samples[3].image().getpixel((0, 0)) == colours[3]  # row 3 lives in the second row group
    assert len(load_samples(task, tmp_path, limit=2)) == 2
    with pytest.raises(ConfigError, match="split"):
        load_samples(task, tmp_path, split="nosuchsplit")


def test_no_layout_names_the_expected_layouts(tmp_path):
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(ConfigError) as e:
        load_samples("docvqa", tmp_path)
    msg = str(e.value)
    assert "val/val_v1.0.json" in msg and "parquet" in msg
    with pytest.raises(ConfigError, match="questions.jsonl"):
        load_samples("entitygrid", tmp_path)


def test_unknown_task_and_bad_parquet(tmp_path):
    with pytest.raises(ConfigError, match="valid tasks: chartqa, docvqa, textvqa, entitygrid"):
        load_samples("mmmu", tmp_path)
    write_parquet(tmp_path / "test.parquet", [{"foo": 1}])
    with pytest.raises(ConfigError, match="question"):
        load_samples("chartqa", tmp_path)


def test_corrupt_json_names_the_file_and_layout(tmp_path):
    base = tmp_path / "val"
    (base / "documents").mkdir(parents=True)
    (base / "val_v1.0.json").write_text('{"data": [{"questionId": 1, "question": "Da')  # cut mid-write
    with pytest.raises(ConfigError, match=r"val_v1\.0\.json is not valid JSON.*\"data\": \[\{\"questionId\""):
        load_samples("docvqa", tmp_path)
    chart = tmp_path / "chart" / "test"
    (chart / "png").mkdir(parents=True)
    (chart / "test_human.json").write_bytes(b"\xff\xfe not json")
    with pytest.raises(ConfigError, match=r"test_human\.json is not valid JSON.*imgname.*ChartQA release"):
        load_samples("chartqa", tmp_path / "chart")


def test_mis_keyed_json_names_the_missing_key(tmp_path):
    base = tmp_path / "val"
    (base / "documents").mkdir(parents=True)
    (base / "val_v1.0.json").write_text(json.dumps({"questions": []}))  # no "data"
    with pytest.raises(ConfigError, match=r"val_v1\.0\.json has no top-level 'data' key.*DocVQA release"):
        load_samples("docvqa", tmp_path)
    (base / "val_v1.0.json").write_text(json.dumps({"data": [{"questionId": 1, "question": "q"}]}))
    with pytest.raises(ConfigError, match=r"record 0 lacks 'image'"):
        load_samples("docvqa", tmp_path)
    tv = tmp_path / "tv"
    (tv / "train_images").mkdir(parents=True)
    (tv / "TextVQA_0.5.1_val.json").write_text(json.dumps({"data": [{"question_id": 3, "question": "q"}]}))
    with pytest.raises(ConfigError, match=r"TextVQA_0\.5\.1_val\.json: record 0 lacks 'image_id'.*TextVQA release"):
        load_samples("textvqa", tv)
    chart = tmp_path / "chart" / "test"
    (chart / "png").mkdir(parents=True)
    (chart / "test_human.json").write_text(json.dumps({"imgname": "a.png"}))  # an object, not a list
    with pytest.raises(ConfigError, match=r"expected a list of question records, found dict"):
        load_samples("chartqa", tmp_path / "chart")
