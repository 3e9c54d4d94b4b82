"""Paired statistics (hand-computed values) and `shirg compare` on two real tiny eval runs."""

from __future__ import annotations

import json

import pytest

from shirg.cli import main
from shirg.evaluate.stats import mcnemar_exact, newcombe_paired, paired_difference, wilson


def test_wilson_known_values():
    lo, hi = wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = wilson(0, 10)
    z2 = 1.959963984540054**2
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(z2 / (10 + z2))
    assert wilson(0, 0) == (0.0, 1.0)  # no samples: nothing known


def test_mcnemar_exact_binomial():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 3) == pytest.approx(2 / 8)
    assert mcnemar_exact(1, 9) == pytest.approx(2 * (1 + 10) / 1024)
    assert mcnemar_exact(5, 5) == 1.0


def test_paired_difference_newcombe():
    # 10 pairs: b = 1 (base only), c = 3 (other only), 4 both right, 2 both wrong
    x = [1, 0, 0, 0, 1, 1, 1, 1, 0, 0]
    y = [0, 1, 1, 1, 1, 1, 1, 1, 0, 0]
    r = paired_difference(x, y)
    assert (r["base_only"], r["other_only"], r["n"]) == (1, 3, 10)
    assert r["diff"] == pytest.approx(0.2) and r["base"] == 0.5 and r["other"] == 0.7
    # other - base with Newcombe's cells for (other, base): both 4, other only 3, base only 1, neither 2
    diff, lo, hi = newcombe_paired(4, 3, 1, 2)
    assert diff == pytest.approx(0.2) and r["diff_ci"] == (pytest.approx(lo), pytest.approx(hi))
    assert lo < 0.2 < hi
    assert r["mcnemar_p"] == pytest.approx(mcnemar_exact(1, 3))
    with pytest.raises(ValueError):
        paired_difference([1], [1, 0])
    with pytest.raises(ValueError):
        paired_difference([0.5], [1])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from shirg.testing import write_tiny_lavida_checkpoint

    root = tmp_path_factory.mktemp("cmp")
    ckpt = write_tiny_lavida_checkpoint(root / "tiny", seed=0)
    assert main(["entitygrid", "--out", str(root / "data"), "--n", "6", "--seed", "3", "--preset", "small"]) == 0
    base = ["eval", "--model", str(ckpt), "--task", "entitygrid", "--data", str(root / "data"), "--modes", "lowres",
            "--gen-length", "8", "--steps", "4", "--block-length", "8", "--no-evidence", "--overlays", "0",
            "--no-progress", "--warmup", "0"]
    assert main([*base, "--out", str(root / "float")]) == 0
    assert main([*base, "--weight-format", "int8", "--out", str(root / "int8")]) == 0
    assert main([*base, "--sampler", "threshold", "--threshold", "0.5", "--out", str(root / "thr")]) == 0
    return root


def test_compare_command(runs, capsys):
    out = runs / "cmp"
    assert main(["compare", "--base", str(runs / "float"), "--other", str(runs / "int8"), str(runs / "thr"),
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "McNemar p" in text and "6 paired samples" in text
    result = json.loads((out / "compare.json").read_text())
    assert result["mode"] == "lowres" and result["base_steps_used_mean"] == 4
    int8, thr = result["rows"]
    assert int8["n"] == 6 and 0 <= int8["agreement"] <= 1 and int8["steps_used_mean"] == 4
    assert 1 <= thr["steps_used_mean"] <= 8
    preds = [json.loads(line) for line in (runs / "int8" / "predictions.jsonl").read_text().splitlines()]
    assert all(p["weight_format"] == "int8" for p in preds)
    run = json.loads((runs / "int8" / "run.json").read_text())
    assert run["settings"]["weight_format"] == "int8"


def test_eval_refuses_to_mix_weight_formats_in_one_folder(runs, capsys):
    args = ["eval", "--model", str(runs / "tiny"), "--task", "entitygrid", "--data", str(runs / "data"),
            "--modes", "lowres",
            "--gen-length", "8", "--steps", "4", "--block-length", "8", "--no-evidence", "--overlays", "0",
            "--no-progress", "--out", str(runs / "int8")]
    assert main(args) == 2
    assert "int8 weights" in capsys.readouterr().err  # the run records the format with the model


def test_compare_errors(runs, tmp_path, capsys):
    assert main(["compare", "--base", str(tmp_path), "--other", str(runs / "int8")]) == 2
    assert main(["compare", "--base", str(runs / "float"), "--other", str(runs / "int8"), "--mode", "full"]) == 2
    assert main(["compare", "--base", str(runs / "float"), "--other", str(runs / "int8"), "--metric", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "predictions.jsonl" in err[0] and "no mode 'full'" in err[1] and "nope" in err[2]


def test_compare_reads_a_record_field_such_as_queried_patch_kept(tmp_path, capsys):
    """Selection-only sweep folders hold no scores; --metric queried_patch_kept reads the record field."""
    kept = {"base": [1, 0, 0, 1, 0, 1], "other": [1, 1, 1, 1, 0, 0]}
    for name, values in kept.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "predictions.jsonl").write_text("".join(
            json.dumps({"id": f"s{i}", "mode": "shirg", "scores": {}, "prediction": None, "queried_patch_kept": v})
            + "\n" for i, v in enumerate(values)))
    assert main(["compare", "--base", str(tmp_path / "base"), "--other", str(tmp_path / "other"), "--metric",
                 "queried_patch_kept", "--out", str(tmp_path / "cmp")]) == 0
    row, = json.loads((tmp_path / "cmp" / "compare.json").read_text())["rows"]
    # (other, base) cells: both 2, other only 2, base only 1, neither 1
    diff, lo, hi = newcombe_paired(2, 2, 1, 1)
    assert row["diff"] == pytest.approx(diff) == pytest.approx(1 / 6)
    assert row["diff_ci"] == [pytest.approx(lo), pytest.approx(hi)]
    assert row["mcnemar_p"] == pytest.approx(mcnemar_exact(1, 2))
    # --other-mode: the other runs' mode differs from the base's (here: the base compared with itself)
    assert main(["compare", "--base", str(tmp_path / "other"), "--mode", "shirg", "--other", str(tmp_path / "base"),
                 "--other-mode", "shirg", "--metric", "queried_patch_kept"]) == 0
    with (tmp_path / "base" / "predictions.jsonl").open("a") as f:
        for i, v in enumerate(kept["other"]):
            f.write(json.dumps({"id": f"s{i}", "mode": "visionzip", "scores": {}, "queried_patch_kept": v}) + "\n")
    assert main(["compare", "--base", str(tmp_path / "base"), "--mode", "visionzip", "--other", str(tmp_path / "base"),
                 "--other-mode", "shirg", "--metric", "queried_patch_kept", "--out", str(tmp_path / "cmp2")]) == 0
    row, = json.loads((tmp_path / "cmp2" / "compare.json").read_text())["rows"]
    assert row["diff"] == pytest.approx(-1 / 6)  # shirg (base's values) - visionzip (other's values)
    assert "shirg (runs) vs visionzip (base)" in capsys.readouterr().out
    (tmp_path / "other" / "predictions.jsonl").write_text(json.dumps(
        {"id": "s0", "mode": "shirg", "scores": {}, "queried_patch_kept": None}) + "\n")
    assert main(["compare", "--base", str(tmp_path / "other"), "--other", str(tmp_path / "other"), "--metric",
                 "queried_patch_kept"]) == 2
    assert "missing for a sample" in capsys.readouterr().err


def test_compare_one_question_type(tmp_path, capsys):
    """--type pairs only the samples of one question type; a type no sample has is a one-line error."""
    rows = {"base": [("reading", 1), ("reading", 0), ("position", 0), ("position", 0), ("position", 1)],
            "other": [("reading", 0), ("reading", 0), ("position", 1), ("position", 1), ("position", 1)]}
    for name, values in rows.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "predictions.jsonl").write_text("".join(
            json.dumps({"id": f"s{i}", "mode": "full", "type": t, "prediction": str(v), "scores": {"accuracy": v}})
            + "\n" for i, (t, v) in enumerate(values)))
    args = ["compare", "--base", str(tmp_path / "base"), "--other", str(tmp_path / "other")]
    assert main([*args, "--type", "position", "--out", str(tmp_path / "pos")]) == 0
    assert "full, position questions" in capsys.readouterr().out
    result = json.loads((tmp_path / "pos" / "compare.json").read_text())
    row, = result["rows"]
    assert result["type"] == "position" and row["n"] == 3
    assert (row["base"], row["other"], row["base_only"], row["other_only"]) == (pytest.approx(1 / 3), 1.0, 0, 2)
    assert main([*args, "--out", str(tmp_path / "all")]) == 0
    row, = json.loads((tmp_path / "all" / "compare.json").read_text())["rows"]
    assert row["n"] == 5 and row["diff"] == pytest.approx(1 / 5)
    capsys.readouterr()
    assert main([*args, "--type", "counting"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no sample of type 'counting'" in err[0] and "position, reading" in err[0]
