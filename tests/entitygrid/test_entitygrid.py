"""EntityGrid generator (determinism, answers consistent with the scene, boxes) and evidence recall."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from shirg.cli import main
from shirg.entitygrid import COLOURS, EntityGridConfig, generate, generate_sample, parse_grid
from shirg.errors import ConfigError
from shirg.evaluate.evidence import entity_patches, evidence_recall, kept_patches
from shirg.evaluate.metrics import entitygrid_score
from shirg.tokens.types import KIND_HI, KIND_MERGED, KIND_SCAFFOLD, TokenSet

SMALL = EntityGridConfig(size=336, rows=4, cols=4, label_px=10)


def test_generation_is_deterministic_and_prefix_stable(tmp_path):
    a = generate(tmp_path / "a", 5, seed=3, cfg=SMALL)
    generate(tmp_path / "b", 5, seed=3, cfg=SMALL)
    generate(tmp_path / "c", 2, seed=3, cfg=SMALL)
    generate(tmp_path / "d", 2, seed=4, cfg=SMALL)
    qa = (tmp_path / "a" / "questions.jsonl").read_text()
    assert qa == (tmp_path / "b" / "questions.jsonl").read_text()
    for name in ("eg3-000000.png", "eg3-000004.png"):
        assert (tmp_path / "a" / "images" / name).read_bytes() == (tmp_path / "b" / "images" / name).read_bytes()
    assert qa.splitlines()[:2] == (tmp_path / "c" / "questions.jsonl").read_text().splitlines()
    assert (tmp_path / "d" / "questions.jsonl").read_text().splitlines()[0] != qa.splitlines()[0]
    assert a["counts"] == {"recognition": 2, "position": 1, "counting": 1, "reading": 1}


def _matching(scene, question):
    words = question.lower().replace("?", " ").split()
    colours = [c for c in COLOURS if c in words]
    shapes = [s for s in ("circle", "square", "triangle", "diamond", "star", "hexagon")
              if s in words or s + "s" in words]
    return [e for e in scene if (not colours or e["colour"] in colours) and (not shapes or e["shape"] in shapes)]


@pytest.mark.parametrize("index", range(8))
def test_answers_agree_with_the_scene_and_boxes_hold_the_entity(index):
    img, rec = generate_sample(SMALL, seed=0, index=index)
    scene = rec["scene"]
    answer = rec["answers"][0]
    if rec["type"] == "counting":
        assert int(answer) == len(_matching(scene, rec["question"])) == len(rec["boxes"])
    elif rec["type"] == "position":
        targets = _matching(scene, rec["question"])
        assert entitygrid_score(answer, rec["answers"], "position")["correct"] == 1.0
        assert {(e["row"], e["col"]) for e in targets} == {(t["row"], t["col"]) for t in rec["targets"]}
    elif rec["type"] == "recognition":
        (t,) = rec["targets"]
        e = next(e for e in scene if (e["row"], e["col"]) == (t["row"], t["col"]))
        assert answer == f"{e['colour']} {e['shape']}"
    else:
        (t,) = rec["targets"]
        e = next(e for e in scene if (e["row"], e["col"]) == (t["row"], t["col"]))
        assert answer == str(e["label"])
    arr = np.asarray(img)
    for target, (x0, y0, x1, y1) in zip(rec["targets"], rec["boxes"], strict=True):
        e = next(e for e in scene if (e["row"], e["col"]) == (target["row"], target["col"]))
        patch = arr[y0:y1, x0:x1].reshape(-1, 3)
        assert (np.abs(patch.astype(int) - COLOURS[e["colour"]]).sum(1) < 10).mean() > 0.2  # the shape is inside
        assert (patch.sum(1) < 60).any()  # and so is its black number
        cw = SMALL.size / SMALL.cols
        assert (e["col"] - 1) * cw <= (x0 + x1) / 2 <= e["col"] * cw  # in its own column


def test_numbers_inside_the_shapes_keep_the_scene_and_move_only_the_number():
    from dataclasses import replace

    inside = replace(SMALL, label_place="inside")
    for index in range(8):
        img_u, rec_u = generate_sample(SMALL, seed=0, index=index)
        img_i, rec_i = generate_sample(inside, seed=0, index=index)
        # same seed, same scene and answers; only the reading question's wording and the drawing differ
        assert [(e["row"], e["col"], e["colour"], e["shape"], e["label"]) for e in rec_u["scene"]] == \
               [(e["row"], e["col"], e["colour"], e["shape"], e["label"]) for e in rec_i["scene"]]
        assert rec_u["answers"] == rec_i["answers"]
        if rec_i["type"] == "reading":
            assert "written on the" in rec_i["question"] and "written under the" in rec_u["question"]
        else:
            assert rec_i["question"] == rec_u["question"]
        arr = np.asarray(img_i).astype(int)
        for e in rec_i["scene"]:
            x0, y0, x1, y1 = e["box"]
            cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
            centre = arr[cy - 6:cy + 7, cx - 6:cx + 7].reshape(-1, 3)
            assert (centre.sum(1) < 200).any()  # the black (anti-aliased) number sits at the shape's centre
            assert (centre.min(1) > 240).any()  # on its white tag
            below = arr[y1:min(y1 + 12, arr.shape[0]), x0:x1].reshape(-1, 3)
            assert not (below.sum(1) < 200).any()  # and no longer under the shape
    with pytest.raises(ConfigError, match="label_place"):
        generate("/nonexistent-never-written", 1, cfg=replace(SMALL, label_place="above"))


def test_cli_label_place_inside(tmp_path):
    out = tmp_path / "eg"
    assert main(["entitygrid", "--preset", "small", "--label-place", "inside", "--out", str(out), "--n", "4"]) == 0
    recs = [json.loads(line) for line in (out / "questions.jsonl").read_text().splitlines()]
    assert recs[3]["question"].startswith("What number is written on the")
    assert json.loads((out / "entitygrid.json").read_text())["config"]["label_place"] == "inside"


@pytest.mark.parametrize("place", ["inside", "under"])
def test_label_grid_centres_each_number_in_one_square_and_keeps_the_scene(tmp_path, place):
    from dataclasses import replace

    from shirg.entitygrid import preset_config

    # under: smaller shapes, so that the number drawn below stays in its cell after the move
    free = preset_config("small", label_place=place, **({"entity_scale": 0.35} if place == "under" else {}))
    snapped = replace(free, label_grid=14)
    for index in range(12):
        _, rec_f = generate_sample(free, seed=5, index=index)
        img, rec_s = generate_sample(snapped, seed=5, index=index)
        assert [(e["row"], e["col"], e["colour"], e["shape"], e["label"]) for e in rec_f["scene"]] == \
               [(e["row"], e["col"], e["colour"], e["shape"], e["label"]) for e in rec_s["scene"]]
        assert rec_f["question"] == rec_s["question"] and rec_f["answers"] == rec_s["answers"]
        for ef, es in zip(rec_f["scene"], rec_s["scene"], strict=True):  # moved by at most 7 px (+ rounding)
            assert max(abs(a - b) for a, b in zip(ef["box"], es["box"], strict=True)) <= 8
        arr = np.asarray(img).astype(int)
        digit = (np.ptp(arr, axis=-1) < 30) & (arr.sum(-1) < 600)  # antialiased black pixels
        ys, xs = np.nonzero(digit)
        squares = set(zip((ys // 14).tolist(), (xs // 14).tolist(), strict=True))
        assert len(squares) == len(rec_s["scene"])  # each number inside one 14 x 14 square, one per entity
        for i, j in squares:  # and centred in it
            inside = digit[i * 14:(i + 1) * 14, j * 14:(j + 1) * 14]
            r, c = np.nonzero(inside)
            assert abs((r.min() + r.max()) / 2 - 6.5) <= 1.5 and abs((c.min() + c.max()) / 2 - 6.5) <= 1.5
    with pytest.raises(ConfigError, match="label_grid"):
        generate(tmp_path / "never", 1, cfg=replace(free, label_grid=-1))
    with pytest.raises(ConfigError, match="label_jitter"):
        generate(tmp_path / "never", 1, cfg=replace(free, label_jitter=2))  # jitter needs the grid
    with pytest.raises(ConfigError, match="out of their 14-px square"):
        generate(tmp_path / "never", 1, cfg=replace(snapped, label_jitter=5))  # (14 - 8 / 2) / 2 = 5
    if place == "inside":
        replace(snapped, label_jitter=4).validate()
    with pytest.raises(ConfigError, match="out of their cells"):
        generate(tmp_path / "never", 1, cfg=replace(snapped, label_grid=40))
    with pytest.raises(ConfigError, match="out of their cells"):  # the small preset's shapes leave no room below
        generate(tmp_path / "never", 1, cfg=replace(preset_config("small"), label_grid=14))
    out = tmp_path / "eg"
    assert main(["entitygrid", "--preset", "small", "--label-place", "inside", "--label-grid", "14", "--out", str(out),
                 "--n", "2"]) == 0
    assert json.loads((out / "entitygrid.json").read_text())["config"]["label_grid"] == 14


def test_label_jitter_moves_numbers_within_their_square_and_keeps_the_scene():
    from dataclasses import replace

    from shirg.entitygrid import preset_config

    snapped = preset_config("small", label_place="inside", label_grid=14)
    jittered = replace(snapped, label_jitter=3)
    offsets = set()
    for index in range(40):
        _, rec_s = generate_sample(snapped, seed=8, index=index)
        img, rec_j = generate_sample(jittered, seed=8, index=index)
        assert rec_s["answers"] == rec_j["answers"] and rec_s["question"] == rec_j["question"]
        for es, ej in zip(rec_s["scene"], rec_j["scene"], strict=True):
            assert (es["label"], es["colour"], es["shape"]) == (ej["label"], ej["colour"], ej["shape"])
            dx, dy = ej["box"][0] - es["box"][0], ej["box"][1] - es["box"][1]
            assert abs(dx) <= 4 and abs(dy) <= 4  # 3 px, plus the box's rounding
            offsets.add((dx, dy))
        arr = np.asarray(img).astype(int)
        digit = (np.ptp(arr, axis=-1) < 30) & (arr.sum(-1) < 600)
        ys, xs = np.nonzero(digit)
        assert len(set(zip((ys // 14).tolist(), (xs // 14).tolist(), strict=True))) == len(rec_j["scene"])
    assert len(offsets) > 20  # really random, not one fixed shift
    again, _ = generate_sample(jittered, seed=8, index=39)
    assert np.array_equal(np.asarray(again), np.asarray(img))  # and deterministic


def test_cli_writes_images_questions_and_llava_records(tmp_path):
    out = tmp_path / "eg"
    rc = main(["entitygrid", "--out", str(out), "--n", "4", "--seed", "1", "--size", "280", "--grid", "4x5",
               "--train-records", str(tmp_path / "train" / "llava.json")])
    assert rc == 0
    recs = [json.loads(line) for line in (out / "questions.jsonl").read_text().splitlines()]
    assert [r["type"] for r in recs] == ["recognition", "position", "counting", "reading"]
    assert Image.open(out / recs[0]["image"]).size == (280, 280)
    assert recs[0]["grid"] == [4, 5]
    llava = json.loads((tmp_path / "train" / "llava.json").read_text())
    assert llava[0]["conversations"][0]["value"] == "<image>\n" + recs[0]["question"]
    assert llava[0]["conversations"][1] == {"from": "gpt", "value": recs[0]["answers"][0]}
    assert (tmp_path / "train" / llava[0]["image"]).resolve() == (out / recs[0]["image"]).resolve()
    assert main(["entitygrid", "--out", str(out), "--grid", "eight"]) == 2


def test_types_restrict_the_questions_and_keep_the_scenes(tmp_path):
    out_all, out_read = tmp_path / "all", tmp_path / "read"
    base = ["entitygrid", "--preset", "small", "--n", "6", "--seed", "3"]
    assert main([*base, "--out", str(out_all)]) == 0
    assert main([*base, "--out", str(out_read), "--types", "reading"]) == 0
    every = [json.loads(line) for line in (out_all / "questions.jsonl").read_text().splitlines()]
    read = [json.loads(line) for line in (out_read / "questions.jsonl").read_text().splitlines()]
    assert [r["type"] for r in read] == ["reading"] * 6
    assert [r["scene"] for r in read] == [r["scene"] for r in every]  # same scenes, other questions
    assert (out_all / every[2]["image"]).read_bytes() == (out_read / read[2]["image"]).read_bytes()
    assert read[3]["question"] == every[3]["question"]  # index 3 is a reading question in both
    for r in read:  # the answer is the queried entity's number
        (target,) = r["targets"]
        assert r["answers"] == [str(next(e["label"] for e in r["scene"] if (e["row"], e["col"]) ==
                                         (target["row"], target["col"])))]
    meta = json.loads((out_read / "entitygrid.json").read_text())
    assert meta["types"] == ["reading"] and meta["counts"]["reading"] == 6 and meta["counts"]["position"] == 0
    _, rec = generate_sample(EntityGridConfig(size=280, rows=4, cols=5), 1, 5, ["counting", "position"])
    assert rec["type"] == "position"  # the types cycle by index
    for bad in (["reading", "reading"], ["spelling"], []):
        with pytest.raises(ConfigError, match="--types reading"):
            generate_sample(EntityGridConfig(), 0, 0, bad)
    assert main([*base, "--out", str(tmp_path / "bad"), "--types", "reading,spelling"]) == 2
    assert not (tmp_path / "bad").exists()  # checked before anything is written


def test_config_errors():
    with pytest.raises(ConfigError, match="ROWSxCOLS"):
        parse_grid("8by8")
    with pytest.raises(ConfigError, match="occupancy"):
        generate("/nonexistent-never-written", 1, cfg=EntityGridConfig(occupancy=0))


# ----------------------------------------------------------------------------- evidence recall


def _tokenset(grid: int, idx: list[int], merged_boxes: list[tuple] = ()) -> TokenSet:
    kind = [KIND_SCAFFOLD] + [KIND_HI] * len(idx) + [KIND_MERGED] * len(merged_boxes)
    boxes = [(0.5, 0.5, 1.0, 1.0)]  # a scaffold token covering everything: must not count
    boxes += [((i % grid + 0.5) / grid, (i // grid + 0.5) / grid, 1 / grid, 1 / grid) for i in idx]
    boxes += list(merged_boxes)
    index = [0] + idx + [0] * len(merged_boxes)
    n = len(kind)
    return TokenSet(features=torch.zeros(1, n, 2), boxes=torch.tensor([boxes]), kind=torch.tensor([kind]),
                    index=torch.tensor([index]), grid=grid, scaffold_grid=1, strategy="test")


def test_entity_patches_map_pixels_through_the_content_box():
    # 400 x 200 image padded onto a square canvas: content box y in [0.25, 0.75]; grid 4 (cells 0.25 wide)
    ent = entity_patches([[0, 0, 200, 100]], (400, 200), (0.0, 0.25, 1.0, 0.75), 4)
    # box covers canvas x in [0, 0.5], y in [0.25, 0.5]: cell centres x 0.125, 0.375 and y 0.375
    assert ent.nonzero().flatten().tolist() == [4, 5]
    tiny = entity_patches([[390, 190, 392, 192]], (400, 200), (0.0, 0.25, 1.0, 0.75), 4)
    assert tiny.nonzero().flatten().tolist() == [11]  # no centre inside: the cell under the box centre


def test_evidence_recall_counts_hi_and_merged_tokens():
    ent = torch.zeros(16, dtype=torch.bool)
    ent[[0, 1, 4, 5]] = True
    sel = _tokenset(4, [0, 9])
    assert evidence_recall(ent, kept_patches(sel)) == 0.25
    merged = _tokenset(4, [0], merged_boxes=[(0.375, 0.375, 0.2, 0.2)])  # holds the centre of cell 5 only
    kept = kept_patches(merged)
    assert kept[0] and not kept[9]
    assert evidence_recall(ent, kept) == pytest.approx(0.5)  # cells 0 (hi) and 5 (merged box holds centre)
    assert evidence_recall(ent, kept_patches(merged, strict=True)) == 0.25
    assert evidence_recall(torch.zeros(16, dtype=torch.bool), kept) is None


def test_captions_describe_every_cell_and_stay_out_of_the_benchmark(tmp_path):
    from shirg.entitygrid import CAPTION_QUESTION, describe_scene, preset_config

    meta = generate(tmp_path / "eg", 4, seed=5, cfg=preset_config("small"), captions=True)
    questions = [json.loads(ln) for ln in (tmp_path / "eg" / "questions.jsonl").read_text().splitlines()]
    llava = json.loads((tmp_path / "eg" / "llava_train.json").read_text())
    assert meta["captions"] and len(questions) == 4 and len(llava) == 8
    assert all(CAPTION_QUESTION not in q["question"] for q in questions)
    for rec, cap in zip(questions, llava[4:], strict=True):
        assert cap["image"] == rec["image"] and CAPTION_QUESTION in cap["conversations"][0]["value"]
        text = cap["conversations"][1]["value"]
        assert text == describe_scene(rec)
        rows = text.split("; ")
        assert len(rows) == 3 and all(len(r.split(", ")) == 3 for r in rows)
        for e in rec["scene"]:  # the entity sits at its own row and column, with its number
            assert rows[e["row"] - 1].split(", ")[e["col"] - 1] == f"{e['colour']} {e['shape']} {e['label']}"
        assert sum(c == "empty" for r in rows for c in r.split(", ")) == 9 - len(rec["scene"])
    assert len(json.loads((tmp_path / "eg" / "llava_train.json").read_text())) == 8
    plain = generate(tmp_path / "plain", 4, seed=5, cfg=preset_config("small"))
    assert not plain["captions"] and len(json.loads((tmp_path / "plain" / "llava_train.json").read_text())) == 4
    with pytest.raises(ConfigError, match="preset"):
        preset_config("huge")


def test_cell_records_name_each_cell_and_stay_out_of_the_benchmark(tmp_path):
    from shirg.entitygrid import preset_config, training_records

    meta = generate(tmp_path / "eg", 3, seed=6, cfg=preset_config("small", rows=2, cols=3), cells=6)
    questions = [json.loads(ln) for ln in (tmp_path / "eg" / "questions.jsonl").read_text().splitlines()]
    llava = json.loads((tmp_path / "eg" / "llava_train.json").read_text())
    assert meta["cells"] and len(questions) == 3 and len(llava) == 3 + 3 * 6
    assert all("Describe the cell" not in q["question"] for q in questions)
    for k, rec in enumerate(questions):
        cells = llava[3 + 6 * k: 3 + 6 * (k + 1)]
        assert all(c["image"] == rec["image"] for c in cells)
        by_cell = {}
        for c in cells:
            q = c["conversations"][0]["value"]
            row, col = int(q.split("row ")[1].split(",")[0]), int(q.split("column ")[1].rstrip("."))
            by_cell[(row, col)] = c["conversations"][1]["value"]
        assert sorted(by_cell) == [(r, c) for r in (1, 2) for c in (1, 2, 3)]
        for e in rec["scene"]:
            assert by_cell.pop((e["row"], e["col"])) == f"{e['colour']} {e['shape']} {e['label']}"
        assert set(by_cell.values()) <= {"empty"}  # every cell without an entity
    some = training_records(questions, cells=2)
    # two distinct cells per image, seeded by the sample
    assert len(some) == 3 + 3 * 2 and some == training_records(questions, cells=2)
    assert all(some[3 + 2 * k]["id"] != some[4 + 2 * k]["id"] for k in range(3))
    assert training_records(questions, cells=0) == training_records(questions)
