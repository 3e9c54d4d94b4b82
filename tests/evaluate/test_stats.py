"""The protocol's statistics: values from their definitions and textbook examples; coverage by simulation."""

from __future__ import annotations

import math
import random

import pytest

from shirg.evaluate import stats


@pytest.mark.parametrize(("k", "n", "lo", "hi"), [
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion", score method (Wilson)
    (81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718),
])
def test_wilson_matches_newcombes_worked_examples(k, n, lo, hi):
    got = stats.wilson(k, n)
    assert got == pytest.approx((lo, hi), abs=6e-5)


def test_wilson_solves_the_score_equation():
    """The limits are the p with |k/n - p| = z sqrt(p (1 - p) / n), the Wilson interval's definition."""
    for k, n in ((7, 40), (39, 40), (250, 500)):
        for p in stats.wilson(k, n):
            assert abs(k / n - p) == pytest.approx(stats.Z95 * math.sqrt(p * (1 - p) / n), rel=1e-9)


def test_mcnemar_exact_is_the_two_sided_binomial_test_of_the_discordant_pairs():
    assert stats.mcnemar_exact(1, 6) == pytest.approx(2 * (1 + 7) / 2**7)  # 0.125
    assert stats.mcnemar_exact(6, 1) == stats.mcnemar_exact(1, 6)
    assert stats.mcnemar_exact(5, 5) == 1.0 and stats.mcnemar_exact(0, 0) == 1.0
    assert stats.mcnemar_exact(0, 10) == pytest.approx(2 / 2**10)
    try:  # cross-check only where scipy happens to be installed
        from scipy.stats import binomtest
    except ImportError:
        return
    for b, c in ((3, 12), (20, 31), (0, 4)):
        assert stats.mcnemar_exact(b, c) == pytest.approx(binomtest(b, b + c, 0.5).pvalue, rel=1e-9)


def test_newcombe_paired_from_its_definition():
    a, b, c, d = 30, 12, 4, 54
    n = a + b + c + d
    p1, p2 = (a + b) / n, (a + c) / n
    (l1, u1), (l2, u2) = stats.wilson(a + b, n), stats.wilson(a + c, n)
    phi = (a * d - b * c - n / 2) / math.sqrt((a + b) * (c + d) * (a + c) * (b + d))  # AD > BC: shrunk by N/2
    lo = p1 - p2 - math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    hi = p1 - p2 + math.sqrt((p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2)
    assert stats.newcombe_paired(a, b, c, d) == pytest.approx((0.08, lo, hi))
    # swapping the two modes mirrors the interval
    diff, lo2, hi2 = stats.newcombe_paired(a, c, b, d)
    assert (diff, lo2, hi2) == pytest.approx((-0.08, -hi, -lo))
    # no discordant pairs: difference 0, interval around it
    diff, lo, hi = stats.newcombe_paired(50, 0, 0, 50)
    assert diff == 0 and lo < 0 < hi


def test_newcombe_paired_covers_the_true_difference_about_95_percent_of_the_time():
    rng = random.Random(0)
    for p_both, p_b, p_c in ((0.5, 0.1, 0.05), (0.6, 0.05, 0.05), (0.1, 0.15, 0.02)):
        true = p_b - p_c
        covered, trials, n = 0, 1500, 150
        for _ in range(trials):
            a = b = c = 0
            for _ in range(n):
                u = rng.random()
                if u < p_both:
                    a += 1
                elif u < p_both + p_b:
                    b += 1
                elif u < p_both + p_b + p_c:
                    c += 1
            _, lo, hi = stats.newcombe_paired(a, b, c, n - a - b - c)
            covered += lo <= true <= hi
        assert 0.925 <= covered / trials <= 0.975, (p_both, p_b, p_c, covered / trials)


def test_paired_and_interval_pick_the_method_by_the_scores():
    first = [1, 1, 0, 1, 0, 1, 1, 1]
    second = [1, 0, 0, 0, 0, 1, 0, 1]
    p = stats.paired(first, second)
    assert (p["a"], p["b"], p["c"], p["d"]) == (3, 3, 0, 2)
    assert p["diff"] == pytest.approx(3 / 8) and p["p"] == pytest.approx(0.25)
    assert p["method"].startswith("newcombe")
    iv = stats.interval(first)
    assert iv["method"] == "wilson" and iv["k"] == 6 and (iv["lo"], iv["hi"]) == pytest.approx(stats.wilson(6, 8))
    partial = stats.paired([0.5, 1.0, 0.0, 0.25], [0.0, 1.0, 0.0, 0.75])
    assert partial["method"] == "normal-paired" and partial["p"] is None and partial["diff"] == pytest.approx(0.0)
    diffs = [0.5, 0.0, 0.0, -0.5]
    sd = math.sqrt(sum(d * d for d in diffs) / 3)
    assert partial["hi"] == pytest.approx(stats.Z95 * sd / 2)
    near_one = stats.interval([1.0, 1.0, 0.9, 1.0, 1.0])
    assert near_one["method"] == "normal" and near_one["hi"] == 1.0 and near_one["lo"] < near_one["value"]
    # None marks a sample without this score (another question type): left out of both
    assert stats.paired([1, None, 0], [0, 1, None])["n"] == 1
    with pytest.raises(ValueError):
        stats.paired([1, 0], [1])


def test_compare_modes_pairs_against_the_reference_and_says_when_it_is_missing():
    values = {"full": {"accuracy": [1, 1, 1, 0]}, "shirg": {"accuracy": [1, 0, 1, 0]}}
    out = stats.compare_modes(values, "full")
    assert set(out["paired"]) == {"shirg"}
    assert out["paired"]["shirg"]["accuracy"]["diff"] == pytest.approx(-0.25)
    assert out["intervals"]["full"]["accuracy"]["value"] == 0.75
    assert stats.compare_modes(values, "lowres")["paired"] == {}
    assert stats.verdict({"lo": 0.01, "hi": 0.2}) == "above"
    assert stats.verdict({"lo": -0.01, "hi": 0.2}) == "not distinguishable"
    assert stats.fmt_interval({"diff": 0.015, "lo": -0.028, "hi": 0.058}, signed=True) == "+1.5 [-2.8, +5.8]"


# ----------------------------------------------------------------------------- in summaries and reports


def _eg_records(correct: dict[str, list[int]], types: list[str]) -> list[dict]:
    recs = []
    for i, t in enumerate(types):
        for mode, flags in correct.items():
            recs.append({"id": f"s{i}", "mode": mode, "task": "entitygrid", "type": t, "prediction": "x",
                         "answers": ["x"], "scores": {"f1": float(flags[i]), "accuracy": float(flags[i])},
                         "visual_tokens": 10, "latency_s": 0.1, "memory_mb": None, "memory_kind": None,
                         "fallback": False, "evidence_recall": None if mode != "shirg" else 0.5})
    return recs


def test_summary_gives_every_score_an_interval_and_every_mode_a_paired_difference(tmp_path):
    from shirg.evaluate.summary import markdown, summarize, write_summary

    types = ["reading"] * 6 + ["counting"] * 4
    correct = {"full": [1, 1, 1, 1, 0, 1, 1, 0, 1, 0], "shirg": [1, 0, 1, 0, 0, 1, 1, 1, 1, 0],
               "lowres": [0] * 10}
    summary = summarize(_eg_records(correct, types), "entitygrid", ["full", "shirg", "lowres"])
    st = summary["stats"]
    assert st["reference"] == "full" and st["unit"] == "percent"
    reading = st["intervals"]["full"]["acc_reading"]
    assert reading["n"] == 6 and reading["value"] == pytest.approx(500 / 6)
    assert (reading["lo"], reading["hi"]) == pytest.approx(tuple(100 * v for v in stats.wilson(5, 6)))
    pd = st["paired"]["shirg"]["accuracy"]
    assert (pd["b"], pd["c"]) == (1, 2) and pd["diff"] == pytest.approx(-10.0)
    assert pd["p"] == pytest.approx(stats.mcnemar_exact(1, 2))
    assert st["paired"]["lowres"]["acc_reading"]["diff"] == pytest.approx(-500 / 6)
    assert "evidence_recall" in st["intervals"]["shirg"] and "full" not in st["paired"]
    text = markdown(summary)
    assert "Paired differences against `full`" in text and "| shirg |" in text
    assert stats.fmt_interval(pd, scale=1.0, signed=True) in text
    write_summary(summary, tmp_path)
    lines = (tmp_path / "stats.csv").read_text().splitlines()
    assert lines[0].startswith("mode,metric,value,lo,hi") and any(ln.startswith("shirg,accuracy,") for ln in lines)
    other = summarize(_eg_records(correct, types), "entitygrid", ["full", "shirg", "lowres"], reference="lowres")
    assert set(other["stats"]["paired"]) == {"full", "shirg"}


def test_report_shows_the_intervals_and_restates_them_against_another_reference(tmp_path):
    import json

    from shirg.evaluate.report import ReportError, build_report
    from shirg.evaluate.summary import summarize, write_summary

    types = ["reading"] * 8
    recs = _eg_records({"full": [1, 1, 1, 1, 0, 1, 1, 0], "shirg": [1, 0, 1, 0, 0, 1, 1, 1],
                        "lowres": [0, 0, 0, 1, 0, 0, 0, 0]}, types)
    run = tmp_path / "run"
    write_summary(summarize(recs, "entitygrid", ["full", "shirg", "lowres"]), run)
    (run / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    text = build_report([run], out=tmp_path / "R.md").read_text()
    assert "### Intervals and paired differences" in text and "against `full`" in text
    assert "recomputed" not in text
    text = build_report([run], out=tmp_path / "R2.md", reference="lowres").read_text()
    assert "Paired differences against `lowres`" in text and "recomputed from" in text
    with pytest.raises(ReportError, match="--reference"):
        build_report([run], out=tmp_path / "R3.md", reference="uniform")


def test_eval_refuses_a_reference_that_is_not_run(tmp_path, capsys):
    from shirg.cli import main

    assert main(["entitygrid", "--out", str(tmp_path / "eg"), "--n", "2", "--size", "336"]) == 0
    code = main(["eval", "--preset", "tiny", "--task", "entitygrid", "--data", str(tmp_path / "eg"),
                 "--modes", "lowres,shirg", "--reference", "full", "--out", str(tmp_path / "out")])
    assert code == 2
    assert "--reference full" in capsys.readouterr().err
