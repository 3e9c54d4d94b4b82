"""`shirg select` end to end on a tiny random tower."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from shirg.cli import main


@pytest.mark.parametrize("strategy", ["shirg", "uniform"])
def test_select_writes_png_and_json(tmp_path, vision_folder, chart_image, strategy, capsys):
    out, js = tmp_path / "o.png", tmp_path / "sel.json"
    code = main(["select", "--image", str(chart_image), "--vision", str(vision_folder), "--strategy", strategy,
                 "--out", str(out), "--json", str(js), "--question", "what is the max?"])
    assert code == 0
    img = Image.open(out)
    img.verify()
    assert img.format == "PNG"
    sel = json.loads(js.read_text())
    assert sel["strategy"] == strategy and sel["grid"] == 48 and sel["scaffold_grid"] == 12 and sel["k"] == 768
    assert sel["num_tokens"] == 144 + 768 == len(sel["tokens"])
    kept = [t for t in sel["tokens"] if t["kind"] != "scaffold"]
    assert [t["index"] for t in kept] == sorted(t["index"] for t in kept)
    assert "saliency" in capsys.readouterr().out or strategy != "shirg"


def test_select_bad_input_exits_2(tmp_path, vision_folder, chart_image, capsys):
    base = ["select", "--vision", str(vision_folder), "--out", str(tmp_path / "o.png")]
    assert main(base + ["--image", str(chart_image), "--k", "5000"]) == 2
    assert "K = 5000 is larger than the 2304" in capsys.readouterr().err
    assert main(base + ["--image", str(chart_image), "--strategy", "magic"]) == 2
    assert "valid strategies" in capsys.readouterr().err
    assert main(base + ["--image", str(tmp_path / "none.png")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(base + ["--image", str(chart_image), "--question", "  "]) == 2
    assert "--question is empty" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists(), "nothing written on failure"
