"""Dataset layouts as released: lmms-lab/DocVQA's two configs, DocVQA's current download, answer-less
test splits, per-task column checks, ChartQA's human / augmented split."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from shirg.cli import main
from shirg.errors import ConfigError
from shirg.evaluate.data import chartqa_type, has_answers, load_samples
from shirg.evaluate.summary import summarize


def _png_bytes(colour=(10, 200, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buf, format="PNG")
    return buf.getvalue()


def _parquet(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def _image():
    return {"bytes": _png_bytes(), "path": None}


def test_whole_lmms_lab_docvqa_download_reads_only_the_docvqa_config(tmp_path):
    doc = [{"questionId": i, "question": f"doc q{i}", "answers": ["a"], "docId": i, "image": _image()}
           for i in range(3)]
    info = [{"questionId": 100 + i, "question": f"info q{i}", "answers": ["b"], "answer_type": ["span"],
             "image_url": "x", "image": _image()} for i in range(2)]
    _parquet(tmp_path / "DocVQA" / "validation-00000-of-00001.parquet", doc)
    _parquet(tmp_path / "InfographicVQA" / "validation-00000-of-00001.parquet", info)
    samples = load_samples("docvqa", tmp_path)
    assert [s.question for s in samples] == ["doc q0", "doc q1", "doc q2"]
    # an InfographicVQA file on its own is refused, not scored as DocVQA
    with pytest.raises(ConfigError, match="answer_type"):
        load_samples("docvqa", tmp_path / "InfographicVQA")


def _spdocvqa(root: Path, images: bool = True) -> None:
    (root / "spdocvqa_qas").mkdir(parents=True)
    (root / "spdocvqa_images").mkdir()
    data = {"dataset_name": "SP-DocVQA", "dataset_split": "val", "data": [
        {"questionId": 5, "question": "Date?", "question_types": ["form"], "image": "documents/abc_1.png",
         "docId": 1, "answers": ["1 May"]},
        {"questionId": 6, "question": "Name?", "question_types": ["form"], "image": "documents/abc_2.png",
         "docId": 1, "answers": ["Ann"]}]}
    (root / "spdocvqa_qas" / "val_v1.0_withQT.json").write_text(json.dumps(data))
    if images:
        for name in ("abc_1.png", "abc_2.png"):
            Image.new("RGB", (40, 30), (1, 2, 3)).save(root / "spdocvqa_images" / name)


def test_current_official_docvqa_download(tmp_path):
    _spdocvqa(tmp_path)
    for data in (tmp_path, tmp_path / "spdocvqa_qas"):
        samples = load_samples("docvqa", data)
        assert [(s.id, s.answers) for s in samples] == [("5", ["1 May"]), ("6", ["Ann"])]
        assert samples[1].image_ref == tmp_path / "spdocvqa_images" / "abc_2.png"
        assert samples[0].image().size == (40, 30)


def test_missing_images_fail_before_the_model_loads(tmp_path, capsys):
    _spdocvqa(tmp_path, images=False)
    with pytest.raises(ConfigError, match="2 of 2 images are missing"):
        load_samples("docvqa", tmp_path)
    out = tmp_path / "out"
    assert main(["eval", "--preset", "tiny", "--task", "docvqa", "--data", str(tmp_path / "spdocvqa_qas"),
                 "--modes", "lowres", "--out", str(out), "--no-progress"]) == 2
    assert "images are missing" in capsys.readouterr().err
    assert not (out / "run.json").exists() and not (out / "predictions.jsonl").exists()


def test_answerless_split_writes_the_submission_file(tmp_path, capsys):
    rows = [{"questionId": 40 + i, "question": f"q{i}", "answers": None, "docId": i, "image": _image()}
            for i in range(2)]
    _parquet(tmp_path / "data" / "test-00000-of-00001.parquet", rows)
    samples = load_samples("docvqa", tmp_path / "data", split="test")
    assert not has_answers(samples)
    out = tmp_path / "out"
    assert main(["eval", "--preset", "tiny", "--task", "docvqa", "--data", str(tmp_path / "data"), "--split", "test",
                 "--modes", "lowres", "--out", str(out), "--gen-length", "4", "--steps", "2", "--warmup", "0",
                 "--overlays", "0", "--no-progress"]) == 0
    assert "nothing was scored" in capsys.readouterr().out
    sub = json.loads((out / "submission_lowres.json").read_text())
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sub == [{"questionId": 40, "answer": preds[0]["prediction"]},
                   {"questionId": 41, "answer": preds[1]["prediction"]}]
    assert all(p["scores"] is None for p in preds)
    assert not (out / "summary.md").exists()


def test_task_column_check(tmp_path):
    textvqa = [{"question_id": i, "image_id": f"im{i}", "question": "q", "answers": ["a"] * 10,
                "ocr_tokens": ["x"], "image": _image()} for i in range(2)]
    _parquet(tmp_path / "tv" / "validation-00000-of-00001.parquet", textvqa)
    assert len(load_samples("textvqa", tmp_path / "tv")) == 2
    for task in ("docvqa", "chartqa"):
        with pytest.raises(ConfigError, match=f"does not look like {task} parquet"):
            load_samples(task, tmp_path / "tv", split="validation")


def test_chartqa_types_and_split_scores(tmp_path):
    assert [chartqa_type(v) for v in ("human_test", "augmented_test", 0, 1, "human", "augmented", None)] == [
        "human", "augmented", "human", "augmented", "human", "augmented", None]
    lmms = [{"type": t, "question": "q", "answer": "1", "image": _image()} for t in ("human_test", "augmented_test")]
    _parquet(tmp_path / "lmms" / "test-00000-of-00001.parquet", lmms)
    m4 = [{"query": "q", "label": ["1"], "human_or_machine": v, "image": _image()} for v in (0, 1)]
    _parquet(tmp_path / "m4" / "test-00000-of-00001.parquet", m4)
    for folder in ("lmms", "m4"):
        assert [s.qtype for s in load_samples("chartqa", tmp_path / folder)] == ["human", "augmented"]
    recs = [{"id": str(i), "mode": "m", "type": t, "prediction": "", "answers": ["1"], "latency_s": 1.0,
             "visual_tokens": 1, "scores": {"relaxed_accuracy": s, "exact_match": s}}
            for i, (t, s) in enumerate([("human", 1.0), ("human", 0.0), ("human", 1.0), ("augmented", 0.0)])]
    row = summarize(recs, "chartqa", ["m"])["rows"][0]
    assert row["relaxed_human"] == pytest.approx(100 * 2 / 3) and row["relaxed_augmented"] == 0.0
    assert row["relaxed_accuracy"] == pytest.approx(50.0)
