"""Metric definitions against hand-worked cases (docs/lavida_facts.md section 9)."""

from __future__ import annotations

import math

import pytest

from shirg.errors import ConfigError
from shirg.evaluate import metrics as M


@pytest.mark.parametrize(
    "pred, target, expected",
    [
        ("10.4", "10", 1.0),  # 4 % off: within 5 %
        ("10.6", "10", 0.0),  # 6 % off
        ("9.5", "10", 1.0),  # exactly 5 % is still correct
        ("50%", "0.5", 1.0),  # a trailing % divides by 100
        ("50", "50%", 0.0),  # 50 vs 0.5
        ("0.5", "50%", 1.0),
        ("0", "0", 1.0),  # target 0: string match
        ("0.0", "0", 0.0),  # target 0: no numeric tolerance, and the strings differ
        ("0.01", "0", 0.0),
        ("Yes", "yes", 1.0),  # text: case-insensitive exact match
        ("yes.", "yes", 0.0),
        (" 12 ", "12", 1.0),
    ],
)
def test_chartqa_relaxed_correctness(pred, target, expected):
    assert M.relaxed_correctness(pred, target) == expected


def test_chartqa_multiple_ground_truths_take_the_best():
    assert M.relaxed_accuracy("7", ["blue", "7.2"]) == 1.0
    assert M.relaxed_accuracy("7", ["blue", "8"]) == 0.0


def test_anls_hand_worked():
    # lev("hello", "hallo") = 1, lengths 5 -> 1 - 1/5
    assert M.anls("hallo", ["hello"]) == pytest.approx(0.8)
    # best over ground truths
    assert M.anls("hallo", ["xyz", "hello"]) == pytest.approx(0.8)
    # normalization: case, surrounding and repeated spaces do not count
    assert M.anls("  New   York ", ["new york"]) == 1.0


def test_anls_threshold_keeps_half_drops_below():
    assert M.anls("abxy", ["abcd"]) == pytest.approx(0.5)  # NL = 2/4: kept
    assert M.anls("axyz", ["abcd"]) == 0.0  # NL = 3/4 -> 0.25 < 0.5


def test_anls_variants_differ_on_raw_lengths():
    # normalized strings "ab" vs "ac" (lev 1); raw prediction "  ac  " is 6 characters long
    assert M.anls("  ac  ", ["ab"], variant="standard") == pytest.approx(0.5)
    assert M.anls("  ac  ", ["ab"], variant="lmms-eval") == pytest.approx(1 - 1 / 6)
    with pytest.raises(ConfigError, match="standard"):
        M.anls("a", ["a"], variant="nope")


def test_exact_match():
    assert M.exact_match(" The  Cat ", ["dog", "the cat"]) == 1.0
    assert M.exact_match("cat", ["the cat"]) == 0.0


@pytest.mark.parametrize(
    "raw, normalized",
    [
        ("Two", "2"),
        ("The Dog.", "dog"),
        ("an apple", "apple"),
        ("dont", "don't"),
        ("isnt it", "isn't it"),
        ("3.5", "3.5"),  # a period followed by a digit stays
        ("1,000", "1000"),  # digit commas vanish
        ("yes!", "yes"),
        ("left-hand", "left hand"),  # punctuation inside a word becomes a space
        ("hello - world", "hello world"),  # punctuation next to a space is removed
        ("John's", "john 's"),
        ("none", "0"),
        ("a\tb\nc", "b c"),
    ],
)
def test_vqa_normalization(raw, normalized):
    assert M.normalize_vqa_answer(raw) == normalized


def test_vqa_accuracy_leave_one_out():
    others = ["x"] * 10
    for m, expected in [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)]:
        answers = ["two"] * m + others[m:]
        assert M.vqa_accuracy("2", answers) == pytest.approx(expected), m
    assert M.vqa_accuracy("The Cat.", ["cat"]) == 1.0  # a single ground truth: normalized exact match


def test_set_f1_and_positions():
    assert M.parse_positions("Row 2, column 3; row 5 col 1 and (7, 8)") == {(2, 3), (5, 1), (7, 8)}
    assert M.set_f1({(1, 1)}, {(1, 1), (2, 2)}) == pytest.approx(2 / 3)
    assert M.set_f1(set(), set()) == 1.0
    assert M.set_f1({(1, 1)}, set()) == 0.0


def test_entitygrid_scores():
    gold = ["row 1, column 2; row 3, column 4"]
    s = M.entitygrid_score("The red circles are at row 1, column 2.", gold, "position")
    assert s == {"correct": 0.0, "f1": pytest.approx(2 / 3)}
    assert M.entitygrid_score("row 3, column 4; row 1, column 2", gold, "position")["correct"] == 1.0
    assert M.entitygrid_score("A red triangle.", ["red triangle"], "recognition")["correct"] == 1.0
    assert M.entitygrid_score("red or blue triangle", ["red triangle"], "recognition")["correct"] == 0.0
    assert M.entitygrid_score("triangle", ["red triangle"], "recognition")["correct"] == 0.0
    assert M.entitygrid_score("There are three.", ["3"], "counting") == {"correct": 1.0, "f1": 1.0}
    assert M.entitygrid_score("4", ["3"], "counting")["correct"] == 0.0
    assert M.entitygrid_score("The number is 47", ["47"], "reading")["correct"] == 1.0
    with pytest.raises(ConfigError, match="recognition"):
        M.entitygrid_score("x", ["y"], "colour")


def test_cider_d_hand_worked():
    # two samples, all n-grams in one reference set only: idf = log 2 for every reference n-gram
    perfect = M.cider_d(["a b c d e", "f g h i j"], [["a b c d e"], ["f g h i j"]], backend="own")
    assert perfect["per_sample"] == pytest.approx([10.0, 10.0])
    # sample 1: unigram cosine 1/2 ("a" shared, "c" unseen), no shared bigram, no 3/4-grams -> 10 * 0.5 / 4
    # sample 2: unigrams and bigram identical, no 3/4-grams -> 10 * 2 / 4
    got = M.cider_d(["a c", "d e"], [["a b"], ["d e"]], backend="own")
    assert got["per_sample"] == pytest.approx([1.25, 5.0])
    assert got["cider"] == pytest.approx(3.125)


def test_cider_d_length_penalty_counts_bigrams():
    # hyp "a b c" has 2 bigrams, ref "a b c d" has 3: penalty exp(-1 / 72) on every order
    got = M.cider_d(["a b c", "x y z w"], [["a b c d"], ["x y z w"]], backend="own")
    assert math.isclose(got["per_sample"][1], 10.0)
    assert got["per_sample"][0] < 10.0


def test_cider_d_matches_pycocoevalcap_when_installed():
    pytest.importorskip("pycocoevalcap")
    hyps = ["a red bar chart", "the value is 45.2", "two lines"]
    refs = [["a bar chart in red", "red bars"], ["45.2"], ["two lines cross", "lines"]]
    own = M.cider_d(hyps, refs, backend="own")
    ref = M.cider_d(hyps, refs, backend="pycocoevalcap")
    assert own["per_sample"] == pytest.approx(ref["per_sample"])
