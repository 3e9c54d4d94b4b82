"""`shirg image-use`: per-slot loss with true vs rolled images (shirg/train/probe.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from shirg.cli import main
from shirg.testing import write_tiny_lavida_checkpoint

COLOURS = [(220, 30, 30), (30, 160, 30), (30, 60, 220), (230, 200, 20)]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return write_tiny_lavida_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", linear_init="fan_in")


def _records(folder: Path, same_image: bool, n: int = 6) -> Path:
    (folder / "img").mkdir(parents=True, exist_ok=True)
    recs = []
    for i in range(n):
        colour = COLOURS[0 if same_image else i % len(COLOURS)]
        img = Image.new("RGB", (64, 64), colour)
        if not same_image:
            img.paste((255, 255, 255), (0, 0, 8 * (i + 1), 16))
        img.save(folder / "img" / f"{i}.png")
        recs.append({"id": str(i), "image": f"img/{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat colour is this?"}, {"from": "gpt", "value": "red"}]})
    recs.append({"id": "other", "image": "img/0.png", "conversations": [
        {"from": "human", "value": "<image>\nDescribe it."}, {"from": "gpt", "value": "a square"}]})
    (folder / "records.json").write_text(json.dumps(recs))
    return folder / "records.json"


def _run(ckpt, records, tmp_path, *extra) -> dict:
    out = tmp_path / "iu.json"
    assert main(["image-use", "--model", str(ckpt), "--records", str(records), "--match", "colour", "--n", "6",
                 "--batch-size", "4", "--no-progress", "--json", str(out), *extra]) == 0
    return json.loads(out.read_text())


def test_identical_images_give_identical_losses(ckpt, tmp_path):
    res = _run(ckpt, _records(tmp_path / "d", same_image=True), tmp_path)
    assert res["n"] == 6 and len(res["ce_true"]) == 8
    assert res["ce_true"] == res["ce_rolled"] and res["acc_true"] == res["acc_rolled"]


def test_the_bundled_model_reads_the_digits_at_high_resolution_only(tmp_path, capsys):
    """The bundled small model reads a lone entity's number from the image in `full` (96 % on seed 31
    in docs/small.md), far less with another sample's image, and not in the 168-px `lowres` view."""
    from shirg import bundled

    data = tmp_path / "eg"
    assert main(["entitygrid", "--preset", "small", "--label-place", "inside", "--label-grid", "14",
                 "--label-jitter", "2", "--occupancy", "0.01", "--types", "reading", "--seed", "3", "--n", "32",
                 "--out", str(data)]) == 0
    res = {}
    for mode in ("full", "lowres"):
        out = tmp_path / f"iu-{mode}.json"
        assert main(["image-use", "--model", str(bundled.model_dir()), "--records", str(data / "llava_train.json"),
                     "--n", "32", "--slots", "4", "--mode", mode, "--no-progress", "--json", str(out)]) == 0
        res[mode] = json.loads(out.read_text())
        assert res[mode]["n"] == 32 and res[mode]["mode"] == mode and len(res[mode]["ce_true"]) == 4
        assert all(0 <= x <= 1 for x in res[mode]["acc_true"] + res[mode]["acc_rolled"])
    full, lowres = res["full"], res["lowres"]
    assert full["acc_true"][0] > full["acc_rolled"][0] + 0.4  # slot 0: the digit
    assert full["ce_rolled"][0] > full["ce_true"][0] + 1.0
    assert full["acc_true"][0] > lowres["acc_true"][0] + 0.4
    printed = capsys.readouterr().out
    assert "| slot | CE true | CE rolled | acc true | acc rolled |" in printed and "mean CE over slots" in printed


def test_bad_input_is_a_clear_error(ckpt, tmp_path, capsys):
    records = _records(tmp_path / "d", same_image=True)
    assert main(["image-use", "--model", str(ckpt), "--records", str(records), "--match", "zebra"]) == 2
    assert "no record" in capsys.readouterr().err
    assert main(["image-use", "--model", str(ckpt), "--records", str(records), "--n", "1"]) == 2
    assert "--n must be at least 2" in capsys.readouterr().err
    assert main(["image-use", "--model", str(ckpt), "--records", str(tmp_path / "none.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
