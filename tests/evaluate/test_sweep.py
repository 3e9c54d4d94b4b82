"""`shirg sweep` on a tiny checkpoint: every strategy at every budget, table and plot with intervals."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import DENSE_READING, write_dense_reading_set
from shirg.cli import main
from shirg.evaluate import stats, sweep
from shirg.evaluate.metrics import first_number
from shirg.testing import write_tiny_lavida_checkpoint


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ckpt = write_tiny_lavida_checkpoint(root / "ckpt")
        write_dense_reading_set(root / "eg", n=3, seed=5)
        args = ["sweep", "--model", str(ckpt), "--data", str(root / "eg"), "--budgets", "5,10,20,33",
                "--strategies", "shirg,uniform", "--resolution", "336", "--gen-length", "4", "--steps", "2",
                "--no-progress", "--out", str(root / "out")]
        assert main(args) == 0
        yield root, args
    finally:
        torch.set_num_threads(threads)


def test_sweep_runs_every_strategy_at_every_budget_on_the_same_samples(swept):
    root, _ = swept
    out = root / "out"
    table = json.loads((out / "sweep.json").read_text())
    assert table["samples"] == 3 and table["metric"] == "acc_reading"
    ks = [p["k"] for p in table["points"]]
    assert ks == [29, 58, 115, 190]  # 5 / 10 / 20 / 33 % of the 24 x 24 grid at 336 px
    assert [p["coverage"] for p in table["points"]] == [False, True, True, True]  # 29 < 36 coverage cells
    rows = {(r["strategy"], r["k"]): r for r in table["rows"]}
    assert set(rows) == {(s, k) for s in ("shirg", "uniform") for k in ks}
    records = [json.loads(line) for line in (root / "eg" / "questions.jsonl").read_text().splitlines()]
    scenes = {r["id"]: r["scene"] for r in records}
    queried = {r["id"]: next(e for e in r["scene"] if (e["row"], e["col"]) == (r["targets"][0]["row"],
                                                                             r["targets"][0]["col"]))
               for r in records}
    for (s, k), r in rows.items():
        lines = (out / sweep.budget_dir(k) / "predictions.jsonl").read_text().splitlines()
        preds = [json.loads(line) for line in lines]
        mine = [p for p in preds if p["mode"] == s]
        assert len(mine) == 3
        correct = sum(p["scores"]["accuracy"] for p in mine)
        lo, hi = stats.wilson(int(correct), 3)
        assert r["score"]["value"] == pytest.approx(100 * correct / 3)
        assert (r["score"]["lo"], r["score"]["hi"]) == pytest.approx((100 * lo, 100 * hi))
        assert r["visual_tokens"] == pytest.approx(sum(p["visual_tokens"] for p in mine) / 3)
        kept = [p["queried_patch_kept"] for p in mine]
        assert all(v in (0.0, 1.0) for v in kept)
        assert all(p["twin_patch_kept"] in (0.0, 1.0) for p in mine)  # every dense question has a shape twin
        for p in mine:  # answered with a shape twin's number (a twin of the answer's own number does not count)
            twins = {str(e["label"]) for e in scenes[p["id"]] if e["shape"] == queried[p["id"]]["shape"]
                     and e["colour"] != queried[p["id"]]["colour"]} - set(p["answers"])
            assert p.get("twin_answered") == (float(first_number(p["prediction"]) in twins) if twins else None)
        assert r["queried_patch_kept"]["value"] == pytest.approx(100 * sum(kept) / 3)
        assert r["vs_reference"]["n"] == 3 and r["vs_reference"]["p"] is not None
    # more budget, more visual tokens, for each strategy
    for s in ("shirg", "uniform"):
        tokens = [rows[(s, k)]["visual_tokens"] for k in ks]
        assert tokens == sorted(tokens) and tokens[0] < tokens[-1]
    ref = [json.loads(line) for line in (out / "reference" / "predictions.jsonl").read_text().splitlines()]
    assert {p["mode"] for p in ref} == {"full"} and all(p["queried_patch_kept"] == 1.0 for p in ref)
    assert all(p["twin_patch_kept"] == 1.0 for p in ref)
    md = (out / "sweep.md").read_text()
    assert "| shirg | 5 | 29 (no coverage) |" in md and "kept queried patch" in md
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "sweep.csv").read_text().splitlines()[0].startswith("strategy,percent,k,")


def test_sweep_resumes_without_answering_again(swept):
    root, args = swept
    before = (root / "out" / "k0029" / "predictions.jsonl").read_text()
    assert main(args) == 0
    assert (root / "out" / "k0029" / "predictions.jsonl").read_text() == before


def test_selection_only_keeps_what_the_answering_sweep_kept(swept):
    """--selection-only answers nothing, and its evidence fields equal those of the answered run."""
    root, args = swept
    out = root / "selected"
    sel_args = [*args[: args.index("--out")], "--out", str(out), "--selection-only"]
    assert main(sel_args) == 0
    table = json.loads((out / "sweep.json").read_text())
    assert table["metric"] == "queried_patch_kept"
    fields = ("visual_tokens", "evidence_recall", "evidence_recall_strict", "queried_patch_kept")
    for folder in ["reference", *(sweep.budget_dir(k) for k in (29, 58, 115, 190))]:
        answered = {(r["id"], r["mode"]): r for r in map(json.loads, (root / "out" / folder / "predictions.jsonl")
                                                          .read_text().splitlines())}
        selected = {(r["id"], r["mode"]): r for r in map(json.loads, (out / folder / "predictions.jsonl")
                                                          .read_text().splitlines())}
        assert set(selected) == set(answered) and len(selected) == (3 if folder == "reference" else 6)
        for key, r in selected.items():
            assert r["prediction"] is None and r["scores"] == {}
            assert {f: r[f] for f in fields} == {f: answered[key][f] for f in fields}, (folder, key)
    rows = {(r["strategy"], r["k"]): r for r in table["rows"]}
    kept = [json.loads(line)["queried_patch_kept"] for line in (out / "k0115" / "predictions.jsonl").read_text()
            .splitlines() if json.loads(line)["mode"] == "shirg"]
    assert rows[("shirg", 115)]["score"]["value"] == pytest.approx(100 * sum(kept) / 3)


def test_selection_only_needs_entitygrid(tmp_path, capsys):
    assert main(["sweep", "--preset", "tiny", "--task", "docvqa", "--data", str(tmp_path), "--selection-only",
                 "--out", str(tmp_path / "o")]) == 2
    assert "--selection-only needs --task entitygrid" in capsys.readouterr().err


@pytest.mark.parametrize(("budgets", "match"), [("0,10", "percentages"), ("abc", "percentages"), ("10,10", "distinct")])
def test_bad_budgets_are_one_line_errors(budgets, match, tmp_path, capsys):
    assert main(["sweep", "--preset", "tiny", "--data", str(tmp_path), "--budgets", budgets,
                 "--out", str(tmp_path / "o")]) == 2
    assert "--budgets" in capsys.readouterr().err


def test_swap_questions_asks_each_sample_the_next_ones_question(tmp_path):
    from shirg.evaluate.data import load_samples

    write_dense_reading_set(tmp_path / "eg", n=4, seed=6)
    samples = load_samples("entitygrid", str(tmp_path / "eg"), None, None)
    swapped = sweep.swap_questions(samples)
    assert [s.question for s in swapped] == [s.question for s in samples[1:] + samples[:1]]
    assert [(s.id, s.answers, s.boxes, s.meta) for s in swapped] == [(s.id, s.answers, s.boxes, s.meta)
                                                                      for s in samples]
    assert any(a.question != b.question for a, b in zip(samples, swapped, strict=True))


def test_twins_are_the_queried_shape_in_another_colour_and_kept_means_their_numbers_patch(tmp_path):
    import re

    from shirg.evaluate.data import load_samples
    from shirg.evaluate.evidence import twin_patch_kept

    write_dense_reading_set(tmp_path / "eg", n=6, seed=11)
    recs = {json.loads(line)["id"]: json.loads(line)
            for line in (tmp_path / "eg" / "questions.jsonl").read_text().splitlines()}
    for smp in load_samples("entitygrid", tmp_path / "eg"):
        colour, shape = re.search(r"on the (\w+) (\w+)\?", smp.question).groups()
        want = [e["label_box"] for e in recs[smp.id]["scene"] if e["shape"] == shape and e["colour"] != colour]
        assert want and smp.meta["twin_label_boxes"] == want  # --lookalikes 3 gives every question one
    # a 24 x 24 grid on a 336 px canvas holding the whole image: a number centred at (100, 50) lies in
    # patch row 3, column 7; one at (300, 300) in row 21, column 21
    kept = torch.zeros(576, dtype=torch.bool)
    kept[3 * 24 + 7] = True
    box_a, box_b = [97, 47, 103, 53], [297, 297, 303, 303]
    assert twin_patch_kept([box_a, box_b], (336, 336), (0.0, 0.0, 1.0, 1.0), kept) == 1.0
    assert twin_patch_kept([box_b], (336, 336), (0.0, 0.0, 1.0, 1.0), kept) == 0.0
    assert twin_patch_kept([], (336, 336), (0.0, 0.0, 1.0, 1.0), kept) is None


def test_twin_answered_means_a_wrong_number_that_is_a_shape_twins(tmp_path):
    from shirg.evaluate.data import load_samples
    from shirg.evaluate.runner import twin_answered

    write_dense_reading_set(tmp_path / "eg", n=8, seed=11)
    seen = 0
    for smp in load_samples("entitygrid", tmp_path / "eg"):
        twins = smp.meta["twin_labels"]
        assert smp.answers[0] not in twins
        if not twins:  # every twin carries the queried number (numbers repeat in dense scenes)
            continue
        seen += 1
        assert twin_answered(f"{twins[0]}", smp) == 1.0 and twin_answered(f"it is {twins[-1]}.", smp) == 1.0
        assert twin_answered(smp.answers[0], smp) == 0.0 and twin_answered("", smp) == 0.0
        other = next(str(n) for n in range(1, 10) if str(n) not in twins and str(n) != smp.answers[0])
        assert twin_answered(other, smp) == 0.0
    assert seen >= 4
    # only reading questions have one: every question type's set gives the others none
    every_type = [a for a in DENSE_READING if a not in ("--types", "reading")]
    assert main(["entitygrid", *every_type, "--n", "8", "--seed", "2", "--out", str(tmp_path / "all")]) == 0
    for smp in load_samples("entitygrid", tmp_path / "all"):
        assert (smp.qtype == "reading") or smp.meta["twin_labels"] == []
