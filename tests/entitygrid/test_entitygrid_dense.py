"""Dense EntityGrid scenes: repeated digits on big grids, look-alike distractors, a cluttered background."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from shirg.cli import main
from shirg.entitygrid.scenes import COLOURS, Entity, EntityGridConfig, generate_sample, make_question, preset_config
from shirg.errors import ConfigError

DENSE = dict(rows=4, cols=4, occupancy=1.0, entity_scale=0.4, repeat_labels=True, lookalikes=3,
             label_place="inside", label_grid=14, label_jitter=2)


def _lookalikes(scene: list[dict], e: dict) -> list[dict]:
    return [g for g in scene if g is not e and (g["colour"] == e["colour"]) != (g["shape"] == e["shape"])]


@pytest.mark.parametrize("lookalikes", [1, 3, 6, 10])
def test_the_reading_target_has_its_lookalikes_each_with_another_number(lookalikes):
    cfg = preset_config("small", **dict(DENSE, lookalikes=lookalikes, rows=5, cols=5, occupancy=0.9))
    for i in range(12):
        _, rec = generate_sample(cfg, 7, i, types=["reading"])
        (t,) = rec["targets"]
        target = next(e for e in rec["scene"] if (e["row"], e["col"]) == (t["row"], t["col"]))
        same_pair = [e for e in rec["scene"] if (e["colour"], e["shape"]) == (target["colour"], target["shape"])]
        assert same_pair == [target]  # the question names it unambiguously
        looks = _lookalikes(rec["scene"], target)
        assert len(looks) == min(lookalikes, len(rec["scene"]) - 1)
        assert all(g["label"] != target["label"] for g in looks)
        assert rec["answers"] == [str(target["label"])]
        assert f"the {target['colour']} {target['shape']}?" in rec["question"]
        assert 1 <= target["label"] <= 9


@pytest.mark.parametrize("lookalikes", [1, 2, 4])
def test_the_recognition_target_is_the_anchor_whose_lookalikes_share_one_attribute(lookalikes):
    """A recognition question on a look-alike scene names the anchor's cell: the answer's colour-shape pair is
    that entity's alone, and its look-alikes carry the same colour or the same shape, never both."""
    cfg = preset_config("small", label_place="inside", label_grid=14, label_jitter=2, lookalikes=lookalikes)
    n_shared = 0
    for i in range(16):
        _, rec = generate_sample(cfg, 65, i, types=["recognition"])
        (t,) = rec["targets"]
        target = next(e for e in rec["scene"] if (e["row"], e["col"]) == (t["row"], t["col"]))
        assert rec["answers"] == [f"{target['colour']} {target['shape']}"]
        assert f"row {target['row']}, column {target['col']}?" in rec["question"]
        pairs = [(e["colour"], e["shape"]) for e in rec["scene"]]
        assert pairs.count((target["colour"], target["shape"])) == 1
        looks = _lookalikes(rec["scene"], target)
        assert len(looks) == min(lookalikes, len(rec["scene"]) - 1)
        others = [e for e in rec["scene"] if e is not target and e not in looks]
        assert all(e["colour"] != target["colour"] and e["shape"] != target["shape"] for e in others)
        n_shared += any(g["shape"] == target["shape"] for g in looks)
    assert n_shared > 0 or lookalikes == 1  # a neighbour of the answer's shape in another colour


@pytest.mark.parametrize("qtype", ["reading", "recognition"])
def test_a_question_target_must_be_the_only_entity_of_its_colour_and_shape(qtype):
    import random

    a, b = (Entity(1, c, "red", "circle", c, [0, 0, 1, 1], [0, 0, 1, 1]) for c in (1, 2))
    with pytest.raises(ConfigError, match=f"a {qtype} target must be the only entity"):
        make_question(qtype, [a, b], random.Random(0), target=a)
    lone = Entity(2, 1, "blue", "star", 3, [0, 0, 1, 1], [0, 0, 1, 1])
    assert make_question(qtype, [a, b, lone], random.Random(0), target=lone)["targets"] == [lone]


def test_dense_scenes_fill_the_grid_with_digits_and_more_entities_than_a_small_budget_keeps():
    cfg = preset_config("small", **DENSE)
    n_entities, patches = [], []
    for i in range(8):
        img, rec = generate_sample(cfg, 3, i)
        assert img.size == (336, 336) and rec["grid"] == [4, 4]
        assert len(rec["scene"]) == 16 and all(1 <= e["label"] <= 9 for e in rec["scene"])
        n_entities.append(len(rec["scene"]))
        # 14-px patches an entity's box touches on the 24 x 24 grid of the 336-px canvas
        patches.append(sum(((x1 - 1) // 14 - x0 // 14 + 1) * ((y1 - 1) // 14 - y0 // 14 + 1)
                           for x0, y0, x1, y1 in (e["box"] for e in rec["scene"])))
    assert min(patches) > 0.2 * 576  # a 20 % budget cannot keep every entity at full detail
    # each number is drawn where label_box says: black pixels inside it, on its white tag
    arr = np.asarray(img)
    for e in rec["scene"]:
        x0, y0, x1, y1 = e["label_box"]
        assert (arr[y0:y1, x0:x1].sum(-1) < 250).any()


def test_dense_generation_is_deterministic_and_a_prefix(tmp_path):
    args = ["entitygrid", "--preset", "small", "--grid", "4x4", "--occupancy", "1.0", "--entity-scale", "0.4",
            "--repeat-labels", "--lookalikes", "3", "--background", "clutter", "--label-place", "inside",
            "--label-grid", "14", "--label-jitter", "2", "--seed", "11"]
    assert main([*args, "--n", "5", "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--n", "5", "--out", str(tmp_path / "b")]) == 0
    assert main([*args, "--n", "3", "--out", str(tmp_path / "c")]) == 0
    for name in ("eg11-000000.png", "eg11-000004.png"):
        assert (tmp_path / "a/images" / name).read_bytes() == (tmp_path / "b/images" / name).read_bytes()
    qa = (tmp_path / "a/questions.jsonl").read_text().splitlines()
    assert qa == (tmp_path / "b/questions.jsonl").read_text().splitlines()
    assert qa[:3] == (tmp_path / "c/questions.jsonl").read_text().splitlines()
    meta = json.loads((tmp_path / "a/entitygrid.json").read_text())
    assert meta["config"]["lookalikes"] == 3 and meta["config"]["background"] == "clutter"


def test_clutter_is_a_low_contrast_background_that_leaves_the_scene_alone():
    plain = preset_config("small", **DENSE)
    busy = preset_config("small", **dict(DENSE, background="clutter"))
    img_p, rec_p = generate_sample(plain, 4, 0)
    img_b, rec_b = generate_sample(busy, 4, 0)
    a, b = np.asarray(img_p).astype(int), np.asarray(img_b).astype(int)
    free = np.ones(a.shape[:2], bool)  # pixels outside every entity box
    for e in rec_b["scene"]:
        x0, y0, x1, y1 = e["box"]
        free[max(0, y0 - 2):y1 + 2, max(0, x0 - 2):x1 + 2] = False
    assert (b[free] != 255).any(axis=-1).mean() > (a[free] != 255).any(axis=-1).mean() + 0.05  # textured
    assert (b[free].min(-1) >= 195).mean() > 0.999  # pale: never dark like a digit
    assert len(rec_b["scene"]) == len(rec_p["scene"]) == 16
    for e in rec_b["scene"]:  # the entities keep their colours
        x0, y0, x1, y1 = e["box"]
        patch = b[y0:y1, x0:x1].reshape(-1, 3)
        assert (np.abs(patch - COLOURS[e["colour"]]).sum(1) < 10).mean() > 0.2


def test_defaults_draw_the_scenes_of_before():
    """The new fields off: no extra random draws, so the small preset's scenes do not move."""
    cfg = preset_config("small", label_place="inside", label_grid=14, label_jitter=2)
    assert not cfg.repeat_labels and cfg.lookalikes == 0 and cfg.background == "white"
    _, rec = generate_sample(cfg, 2026, 0)
    labels = [e["label"] for e in rec["scene"]]
    assert len(set(labels)) == len(labels)  # unique numbers, as always
    counts = Counter(len(generate_sample(cfg, 2026, i)[1]["scene"]) for i in range(20))
    assert max(counts) <= 9


@pytest.mark.parametrize(("changes", "match"), [
    (dict(rows=4, cols=4, max_label=9), "repeat-labels"),
    (dict(rows=4, cols=4, max_label=9, repeat_labels=True, lookalikes=11), "lookalikes"),
    (dict(rows=4, cols=4, max_label=9, repeat_labels=True, lookalikes=-1), "lookalikes"),
    (dict(rows=1, cols=2, max_label=9, lookalikes=2), "cells"),
    (dict(rows=3, cols=3, max_label=9, background="noise"), "background"),
])
def test_bad_dense_settings_are_one_line_errors(changes, match):
    with pytest.raises(ConfigError, match=match):
        EntityGridConfig(**dict(dict(size=336, entity_scale=0.45, label_px=8), **changes)).validate()


def test_bad_dense_flags_exit_2(tmp_path, capsys):
    assert main(["entitygrid", "--preset", "small", "--grid", "4x4", "--out", str(tmp_path / "x"), "--n", "2"]) == 2
    assert "--repeat-labels" in capsys.readouterr().err


def test_stray_digits_are_drawn_off_every_entity_and_change_nothing_else():
    plain = preset_config("small", **DENSE)
    stray = preset_config("small", **dict(DENSE, stray_digits=30))
    img_p, rec_p = generate_sample(plain, 5, 1)
    img_s, rec_s = generate_sample(stray, 5, 1)
    assert "strays" not in rec_p  # records of scenes without strays stay as they were
    assert rec_s["scene"] == rec_p["scene"] and rec_s["answers"] == rec_p["answers"]
    assert len(rec_s["strays"]) == 30
    s = np.asarray(img_s).astype(int)
    for st in rec_s["strays"]:
        x0, y0, x1, y1 = st["box"]
        assert 1 <= st["label"] <= 9
        assert (x1 - x0) * (y1 - y0) < 14 * 14  # a number's tag, not a shape
        for e in rec_s["scene"]:  # off every entity
            ex0, ey0, ex1, ey1 = e["box"]
            assert x1 + 2 <= ex0 or ex1 + 2 <= x0 or y1 + 2 <= ey0 or ey1 + 2 <= y0
        assert (s[y0:y1, x0:x1].max(-1) < 160).sum() >= 3  # dark ink on its white tag
        centre = ((x0 + x1) / 2, (y0 + y1) / 2)  # on the centre of a 14-px square, as the entities' numbers
        assert abs(centre[0] % 14 - 7) <= 1.5 and abs(centre[1] % 14 - 7) <= 1.5
    boxes = [st["box"] for st in rec_s["strays"]]
    for i, a in enumerate(boxes):  # apart from each other
        for b in boxes[i + 1:]:
            assert a[2] + 2 <= b[0] or b[2] + 2 <= a[0] or a[3] + 2 <= b[1] or b[3] + 2 <= a[1]
    with pytest.raises(ConfigError, match="stray_digits"):
        preset_config("small", **dict(DENSE, stray_digits=-1)).validate()


def test_stray_digits_flag(tmp_path):
    args = ["entitygrid", "--preset", "small", "--grid", "4x4", "--occupancy", "1.0", "--repeat-labels",
            "--label-place", "inside", "--label-grid", "14", "--stray-digits", "12", "--seed", "3", "--n", "2"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    meta = json.loads((tmp_path / "a/entitygrid.json").read_text())
    assert meta["config"]["stray_digits"] == 12
    recs = [json.loads(x) for x in (tmp_path / "a/questions.jsonl").read_text().splitlines()]
    assert all(len(r["strays"]) == 12 for r in recs)
