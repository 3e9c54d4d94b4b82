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


@pytest.mark.parametrize("mode", ["lowres", "full"])
def test_the_bundled_model_reads_its_captions_from_the_image(tmp_path, capsys, mode):
    """The bundled small model learnt the dense captions' image dependence (docs/small.md): with the
    images rolled its caption loss rises clearly; a probe that did not swap the images would not."""
    from shirg import bundled

    data = tmp_path / "eg"
    assert main(["entitygrid", "--preset", "small", "--seed", "3", "--n", "8", "--captions", "--out", str(data)]) == 0
    out = tmp_path / "iu.json"
    assert main(["image-use", "--model", str(bundled.model_dir()), "--records", str(data / "llava_train.json"),
                 "--match", "Describe every", "--n", "8", "--slots", "12", "--mode", mode, "--no-progress",
                 "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["n"] == 8 and res["mode"] == mode and len(res["ce_true"]) == 12
    assert res["mean_ce_rolled"] > res["mean_ce_true"] + 0.5
    assert all(0 <= x <= 1 for x in res["acc_true"] + res["acc_rolled"])
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
