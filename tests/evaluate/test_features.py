"""`shirg probe-features`: patch labels from a scene, the linear probe on features with a known answer,
and the command on a tiny random checkpoint (its output, and bad input as one-line errors)."""

from __future__ import annotations

import json

import pytest
import torch

from shirg.cli import main
from shirg.evaluate.features import patch_labels, probe_attribute, variance_share


def test_patch_labels_mark_the_patches_whose_centre_lies_in_an_entity():
    # a 336 px image filling the canvas, a 24 x 24 grid of 14 px patches: a box over x 28..56, y 14..42
    # holds the centres of columns 2 and 3 (35, 49) in rows 1 and 2 (21, 35)
    scene = [{"box": [28, 14, 56, 42], "colour": "red", "shape": "circle", "label": 7, "row": 1, "col": 2}]
    labels = patch_labels(scene, (336, 336), (0.0, 0.0, 1.0, 1.0), 24, "colour")
    assert {p for p, v in enumerate(labels) if v is not None} == {1 * 24 + 2, 1 * 24 + 3, 2 * 24 + 2, 2 * 24 + 3}
    assert set(labels) == {None, "red"}
    assert set(patch_labels(scene, (336, 336), (0.0, 0.0, 1.0, 1.0), 24, "number")) == {None, 7}
    # the same image padded into the left half of the canvas: its patches move with it
    half = patch_labels(scene, (336, 336), (0.0, 0.0, 0.5, 0.5), 24, "col")
    assert {p for p, v in enumerate(half) if v is not None} == {0 * 24 + 1, 1 * 24 + 1}


def test_probe_decodes_a_label_the_features_hold_and_not_one_they_do_not():
    gen = torch.Generator().manual_seed(0)
    n, patches, dim = 30, 16, 12
    labels = [[int(v) if p % 2 == 0 else None for p, v in enumerate(torch.randint(0, 3, (patches,), generator=gen))]
              for _ in range(n)]
    coded = torch.randn(n, patches, dim, generator=gen) * 0.3
    for k, lab in enumerate(labels):
        for p, v in enumerate(lab):
            if v is not None:
                coded[k, p, v] += 2.0  # the label in three of the dimensions
    r = probe_attribute(coded, labels, fit=20)
    assert r["accuracy"] == 1.0 and r["classes"] == 3 and r["patches"] == 10 * patches // 2
    noise = torch.randn(n, patches, dim, generator=gen)
    r = probe_attribute(noise, labels, fit=20)
    assert r["accuracy"] < 0.6 and abs(r["accuracy"] - r["majority"]) < 0.25  # 3 classes: chance, not the label
    assert r["ci"][0] <= r["accuracy"] <= r["ci"][1]


def test_variance_share_is_the_between_class_part_of_the_total():
    # two classes at -a and +a along one axis, noise of variance s2 on each of 3 axes: the between-class
    # sum of squares is M a^2, the total M a^2 + 3 M s2 (up to sampling), so the share is a^2 / (a^2 + 3 s2)
    gen = torch.Generator().manual_seed(1)
    m, a, s = 20000, 2.0, 1.0
    y = torch.arange(m) % 2
    x = torch.randn(m, 3, generator=gen) * s
    x[:, 0] += torch.where(y == 1, a, -a)
    assert variance_share(x, y) == pytest.approx(a**2 / (a**2 + 3 * s**2), abs=0.01)
    # exact on noise-free features: all variance is between the classes; none when the label is constant
    assert variance_share(torch.tensor([[1.0], [1.0], [3.0]]), torch.tensor([0, 0, 1])) == pytest.approx(1.0)
    assert variance_share(torch.randn(50, 4, generator=gen), torch.zeros(50, dtype=torch.long)) == 0.0
    # scaling every feature leaves the share unchanged; scaling the label's axis up raises it
    assert variance_share(10 * x, y) == pytest.approx(variance_share(x, y))
    x2 = x.clone()
    x2[:, 0] *= 3
    assert variance_share(x2, y) == pytest.approx(9 * a**2 / (9 * a**2 + 9 * s**2 + 2 * s**2), abs=0.01)


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    from shirg.testing import write_tiny_lavida_checkpoint

    root = tmp_path_factory.mktemp("features")
    ckpt = write_tiny_lavida_checkpoint(root / "tiny", seed=0)
    assert main(["entitygrid", "--out", str(root / "eg"), "--n", "6", "--seed", "4", "--preset", "small"]) == 0
    return root, ckpt


def test_probe_features_command(probed, capsys):
    root, ckpt = probed
    out = root / "probe.json"
    assert main(["probe-features", "--model", str(ckpt), "--data", str(root / "eg"), "--n", "6", "--fit", "4",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| colour |" in text and "| row |" in text and "projector" in text and "variance: projector" in text
    result = json.loads(out.read_text())
    assert (result["images"], result["fit_images"], result["grid"]) == (6, 4, 24)
    records = [json.loads(line) for line in (root / "eg" / "questions.jsonl").read_text().splitlines()]
    assert list(result["attributes"]) == ["colour", "shape", "number", "row", "col"]
    for r in result["attributes"].values():
        assert r["tower"]["patches"] == r["projector"]["patches"] > 0
        assert 0.0 <= r["tower"]["accuracy"] <= 1.0 and 0.0 < r["majority"] <= 1.0
        assert all(0.0 <= r[f]["variance_share"] <= 1.0 for f in ("tower", "projector"))
    rows = {e["row"] for rec in records for e in rec["scene"]}
    assert result["attributes"]["row"]["classes"] == len(rows) == 3


def test_probe_features_bad_input_is_one_line(probed, tmp_path, capsys):
    root, ckpt = probed
    assert main(["probe-features", "--model", str(ckpt), "--data", str(tmp_path)]) == 2
    assert main(["probe-features", "--model", str(ckpt), "--data", str(root / "eg"), "--n", "2"]) == 2
    assert main(["probe-features", "--model", str(ckpt), "--data", str(root / "eg"), "--n", "6", "--fit", "6"]) == 2
    (tmp_path / "questions.jsonl").write_text("".join(json.dumps({"id": f"x{i}", "image": "a.png", "scene": []})
                                                      + "\n" for i in range(3)))
    assert main(["probe-features", "--model", str(ckpt), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4
    assert "questions.jsonl" in err[0] and "--n" in err[1] and "--fit" in err[2] and "no scene" in err[3]
