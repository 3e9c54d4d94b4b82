"""`shirg answer` is interactive: a failed high-resolution pass degrades to LaViDa's own layout and
says so, in what it prints and in the JSON it writes."""

from __future__ import annotations

import json

from PIL import Image

import shirg.model.visual as visual
from shirg.cli import main
from shirg.testing import write_tiny_lavida_checkpoint


def test_answer_falls_back_to_lavida_and_says_so(tmp_path, monkeypatch, capsys):
    ckpt = write_tiny_lavida_checkpoint(tmp_path / "tiny")
    image = tmp_path / "chart.png"
    Image.new("RGB", (96, 64), (200, 40, 40)).save(image)
    args = ["answer", "--model", str(ckpt), "--image", str(image), "--question", "what colour?",
            "--resolution", "336", "--gen-length", "8", "--steps", "4", "--block-length", "8"]
    assert main([*args, "--mode", "lavida", "--json", str(tmp_path / "lavida.json")]) == 0
    capsys.readouterr()

    def out_of_memory(*a, **kw):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(visual, "dual_scale", out_of_memory)
    assert main([*args, "--mode", "shirg", "--json", str(tmp_path / "shirg.json")]) == 0
    out = capsys.readouterr().out
    assert "[shirg]" in out and "fell back to lavida: RuntimeError: CUDA out of memory" in out
    rec, ref = (json.loads((tmp_path / f"{m}.json").read_text()) for m in ("shirg", "lavida"))
    assert rec["meta"]["fallback"] == "lavida" and rec["meta"]["mode"] == "lavida"
    assert rec["meta"]["requested_mode"] == "shirg" and "CUDA out of memory" in rec["meta"]["fallback_reason"]
    assert rec["text"] == ref["text"] and rec["meta"]["visual_tokens"] == ref["meta"]["visual_tokens"]
