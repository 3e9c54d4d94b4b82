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
    with pytest.raises(SystemExit) as stop:  # refused while the command line is read
        main(base + ["--image", str(chart_image), "--question", "  "])
    assert stop.value.code == 2 and "--question: an empty value" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists(), "nothing written on failure"


def test_unusable_output_path_and_device_are_one_line_errors(tmp_path, vision_folder, chart_image, capsys):
    base = ["select", "--vision", str(vision_folder), "--image", str(chart_image)]
    assert main(base + ["--out", str(tmp_path)]) == 2  # a folder, not a file
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "check the path" in err
    assert main(base + ["--out", str(tmp_path / "o.png"), "--device", "cuda:7"]) == 2
    assert "CUDA is not available here; use --device cpu" in capsys.readouterr().err


def test_bad_generation_options_exit_2(tmp_path, chart_image, capsys):
    from shirg.testing import write_tiny_lavida_checkpoint

    ckpt = write_tiny_lavida_checkpoint(tmp_path / "tiny")
    base = ["answer", "--model", str(ckpt), "--image", str(chart_image), "--question", "what?",
            "--gen-length", "8", "--steps", "4"]
    assert main(base + ["--temperature", "-1"]) == 2
    assert "temperature must be >= 0" in capsys.readouterr().err
    assert main(base + ["--mode", "shirg", "--merge-eps", "-0.1"]) == 2
    assert "merge eps must be >= 0" in capsys.readouterr().err


def test_default_canvas_follows_the_checkpoint(tmp_path):
    from shirg.canvas import DEFAULT_RESOLUTION, canvas_resolution
    from shirg.commands._common import default_resolution

    assert DEFAULT_RESOLUTION == 672 and canvas_resolution({}) == 672
    assert canvas_resolution({"shirg_resolution": 336}) == 336
    (tmp_path / "config.json").write_text(json.dumps({"shirg_resolution": 448}))
    assert default_resolution(str(tmp_path)) == 448
    (tmp_path / "config.json").write_text("{not json")
    assert default_resolution(str(tmp_path)) == 672  # the model load reports the broken file itself
    assert default_resolution(str(tmp_path / "missing")) == 672 and default_resolution(None) == 672
