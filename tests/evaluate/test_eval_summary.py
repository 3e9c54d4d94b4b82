"""Summary bookkeeping: which CIDEr backend ran, and what the memory column is (per request, or the
order-dependent process-lifetime peak of older answer() metadata)."""

from __future__ import annotations

import json

import pytest

from shirg.evaluate import metrics
from shirg.evaluate.runner import record_memory
from shirg.evaluate.summary import markdown, summarize, write_summary


def _rec(mode: str, i: int, prediction: str, answers: list[str], memory: float | None, kind: str | None,
         task: str = "chartqa") -> dict:
    score = metrics.relaxed_accuracy(prediction, answers)
    return {"id": f"s{i}", "mode": mode, "task": task, "prediction": prediction, "answers": answers,
            "scores": {"relaxed_accuracy": score, "exact_match": metrics.exact_match(prediction, answers)},
            "visual_tokens": 10, "latency_s": 0.5, "memory_mb": memory, "memory_kind": kind, "fallback": False}


def _records(kinds: dict[str, str | None], memory: dict[str, float]) -> list[dict]:
    data = [("12", ["12"]), ("red bars", ["red bars"]), ("3", ["4"])]
    return [_rec(m, i, p, a, memory[m], kinds[m]) for i, (p, a) in enumerate(data) for m in kinds]


def test_record_memory_prefers_per_request_figures():
    assert record_memory({"peak_gpu_mb": 10.0, "request_peak_rss_mb": 5.0}) == (10.0, "peak_gpu")
    assert record_memory({"rss_mb": 3.0, "peak_rss_mb": 900.0, "request_peak_rss_mb": 400.0}) == (
        400.0, "request_peak_rss")
    assert record_memory({"rss_mb": 3.0, "peak_rss_mb": 900.0}) == (900.0, "lifetime_peak_rss")
    assert record_memory({}) == (None, None)


def test_summary_names_the_cider_backend(tmp_path):
    recs = _records({"lowres": "request_peak_rss", "shirg": "request_peak_rss"}, {"lowres": 100.0, "shirg": 150.0})
    summary = summarize(recs, "chartqa", ["lowres", "shirg"])
    try:
        import pycocoevalcap  # noqa: F401

        expected = "pycocoevalcap"
    except ImportError:
        expected = "own"
    assert summary["cider_backend"] == expected
    assert f"backend `{expected}`" in summary["definitions"]["cider"]
    write_summary(summary, tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text())["cider_backend"] == expected
    assert f"CIDEr backend: `{expected}`." in (tmp_path / "summary.md").read_text()
    other = summarize([dict(r, task="textvqa", scores={"vqa_accuracy": 1.0, "exact_match": 1.0}) for r in recs],
                      "textvqa", ["lowres", "shirg"])
    assert "cider_backend" not in other


def test_per_request_memory_gives_ratios_and_says_what_it_is():
    recs = _records({"lowres": "request_peak_rss", "shirg": "request_peak_rss"}, {"lowres": 100.0, "shirg": 150.0})
    summary = summarize(recs, "chartqa", ["lowres", "shirg"])
    rows = {r["mode"]: r for r in summary["rows"]}
    assert rows["shirg"]["memory_x_lowres"] == pytest.approx(1.5)
    assert rows["shirg"]["memory_kind"] == "request_peak_rss"
    assert summary["memory"]["kind"] == "request_peak_rss"
    md = markdown(summary)
    assert "peak RSS MiB per request (CPU)" in md and "sampled while each answer ran" in md


@pytest.mark.parametrize("old_kind", ["lifetime_peak_rss", "peak_rss"])
def test_lifetime_peak_is_labelled_and_gives_no_ratios(old_kind):
    recs = _records({"lowres": old_kind, "shirg": old_kind}, {"lowres": 100.0, "shirg": 150.0})
    summary = summarize(recs, "chartqa", ["lowres", "shirg"])
    rows = {r["mode"]: r for r in summary["rows"]}
    assert rows["shirg"]["memory_kind"] == "lifetime_peak_rss" and "memory_x_lowres" not in rows["shirg"]
    assert rows["shirg"]["peak_memory_mb"] == 150.0 and rows["shirg"]["latency_x_lowres"] == pytest.approx(1.0)
    assert summary["memory"]["kind"] == "lifetime_peak_rss"
    md = markdown(summary)
    assert "lifetime peak RSS MiB (CPU)" in md and "depends on mode order" in md


def test_mixed_memory_kinds_are_not_compared():
    recs = _records({"lowres": "lifetime_peak_rss", "shirg": "request_peak_rss"}, {"lowres": 100.0, "shirg": 150.0})
    summary = summarize(recs, "chartqa", ["lowres", "shirg"])
    assert summary["memory"]["kind"] == "mixed" and "not comparable" in summary["memory"]["note"]
    assert all("memory_x_lowres" not in r for r in summary["rows"])
    # one mode resumed across versions: its own records mix kinds
    recs[0]["memory_kind"] = "request_peak_rss"
    rows = {r["mode"]: r for r in summarize(recs, "chartqa", ["lowres", "shirg"])["rows"]}
    assert rows["lowres"]["memory_kind"] == "mixed"
