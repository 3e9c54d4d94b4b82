"""Weight-only quantization at load (torchao): answers run, weight bytes shrink, logits stay close,
formats without a kernel fail with a one-line error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import shirg
from shirg.cli import main
from shirg.errors import ConfigError
from shirg.model.quantize import WEIGHT_FORMATS, check_weight_format, llm_linears, tensor_bytes, weight_bytes
from shirg.testing import write_tiny_lavida_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_tiny_lavida_checkpoint(tmp_path_factory.mktemp("quant") / "tiny", seed=0)


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("img") / "noise.png"
    Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(path)
    return path


def llm_bytes(model) -> int:
    return sum(tensor_bytes(lin.weight) for lin in llm_linears(model).values())


def logits(model, seed: int = 0) -> torch.Tensor:
    d = model.config.llm.d_model
    embeds = torch.randn(2, 10, d, generator=torch.Generator().manual_seed(seed)).to(model.dtype)
    with torch.no_grad():
        return model.model(embeds).float()


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_int8_shrinks_linears_4x_and_keeps_logits_close(ckpt):
    ref = shirg.load(ckpt)
    q = shirg.load(ckpt, weight_format="int8")
    assert q.weight_format == "int8" and q.dtype == torch.float32
    n = len(llm_linears(q))
    assert q.weight_report["quantized_linears"] == n and n == 7 * ref.config.llm.n_layers + 1
    # int8 matrix plus one fp32 scale (and an int8 zero point) per output row
    ratio = llm_bytes(ref) / llm_bytes(q)
    assert 3.5 < ratio <= 4.0
    assert weight_bytes(q) < weight_bytes(ref)
    assert q.weight_report["weight_bytes"] == weight_bytes(q)
    # the tower, projector and embedding stay as they were
    assert torch.equal(q.model.mm_projector[0].weight, ref.model.mm_projector[0].weight)
    assert relative_error(logits(q), logits(ref)) < 0.02


def test_int4_in_bf16_shrinks_against_bf16_and_keeps_logits_close(ckpt):
    ref = shirg.load(ckpt, weight_format="bf16")
    assert ref.dtype == torch.bfloat16  # bf16 / int4 choose bfloat16 compute when no dtype is given
    q = shirg.load(ckpt, weight_format="int4")
    assert q.dtype == torch.bfloat16
    assert llm_bytes(ref) / llm_bytes(q) > 2.5  # 4-bit values + a bf16 scale and zero per 32-64 weights
    ref32 = shirg.load(ckpt)
    # tiny random weights: int4 with groups of 32/64 stays within ~15 % of the fp32 logits
    assert relative_error(logits(q), logits(ref32)) < 0.15
    assert relative_error(logits(ref), logits(ref32)) < 0.02


@pytest.mark.parametrize("fmt", WEIGHT_FORMATS)
def test_quantized_model_answers(ckpt, fmt):
    model = shirg.load(ckpt, weight_format=fmt)
    image = Image.new("RGB", (200, 150), (30, 140, 200))
    for mode in ("lavida", "full"):
        (ans,) = model.answer(image, "what colour is it?", mode=mode, gen_length=8, steps=4, block_length=8)
        assert ans.meta["weight_format"] == fmt
        assert len(ans.token_ids) <= 8 and isinstance(ans.text, str)


def test_int8_answers_agree_with_float_on_a_sharp_model(ckpt):
    """Greedy answers of a model whose logits are far apart do not change under int8 weights."""
    ref, q = shirg.load(ckpt), shirg.load(ckpt, weight_format="int8")
    images = [Image.new("RGB", (200, 150), c) for c in ((30, 140, 200), (200, 20, 20), (240, 240, 240))]
    questions = ["what colour?", "which shape is in the top row?", "count them"]
    kw = dict(mode="lavida", gen_length=8, steps=8, block_length=8)
    a, b = ref.answer(images, questions, **kw), q.answer(images, questions, **kw)
    agree = sum(x.token_ids == y.token_ids for x, y in zip(a, b, strict=True))
    assert agree >= 2


def test_bad_formats_are_config_errors(ckpt):
    with pytest.raises(ConfigError, match="valid formats: float, bf16, int8, int4"):
        check_weight_format("int5")
    with pytest.raises(ConfigError, match="need bfloat16 compute"):
        shirg.load(ckpt, weight_format="int4", dtype="float32")
    with pytest.raises(ConfigError, match="need bfloat16 compute"):
        shirg.load(ckpt, weight_format="bf16", dtype=torch.float32)


def test_cli_weight_format(ckpt, image_file, capsys):
    args = ["answer", "--model", str(ckpt), "--image", str(image_file), "--question", "what is it?",
            "--gen-length", "8", "--steps", "4", "--device", "cpu"]
    assert main([*args, "--weight-format", "int8"]) == 0
    assert "[lavida]" in capsys.readouterr().out
    assert main([*args, "--weight-format", "int4", "--dtype", "float32"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "int4 weights need bfloat16 compute" in err[0]
    with pytest.raises(SystemExit) as exc:  # argparse: an unknown format is a usage error
        main([*args, "--weight-format", "int3"])
    assert exc.value.code == 2


def test_bench_preset_reports_quantized_weight_bytes(capsys, tmp_path):
    out = tmp_path / "b"
    assert main(["bench", "--preset", "tiny", "--modes", "lowres", "--repeats", "1", "--steps", "4",
                 "--gen-length", "8", "--weight-format", "int8", "--out", str(out)]) == 0
    import json

    result = json.loads((out / "bench.json").read_text())
    ref = shirg.presets.build_preset("tiny")
    assert result["weights_mb"] * 2**20 < weight_bytes(ref)
    assert "int8" in result["model"]
