"""The lmms-eval plugin imports without lmms-eval; its request logic is a plain function, tested here on
the real tiny checkpoint (answers equal ``model.answer`` with the settings the request implies)."""

from __future__ import annotations

import importlib
import inspect
import os

import pytest
from PIL import Image

import shirg
from shirg.errors import ConfigError
from shirg.evaluate import lmms_plugin
from shirg.evaluate.lmms_plugin import GenerationRequest, generate_until, load_model, parse_model_args
from shirg.model.options import VisualOptions
from shirg.testing import write_tiny_lavida_checkpoint


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return shirg.load(write_tiny_lavida_checkpoint(tmp_path_factory.mktemp("lmms") / "tiny"))


class Spy:
    """The real model, with the answer() keyword arguments recorded."""

    def __init__(self, model) -> None:
        self.model, self.calls = model, []

    def answer(self, images, questions, **kw):
        self.calls.append((images, questions, kw))
        return self.model.answer(images, questions, **kw)


def _image(colour=(200, 30, 30)) -> Image.Image:
    return Image.new("RGB", (64, 48), colour)


def test_module_imports_and_exposes_plugin_tables():
    models = importlib.import_module("shirg.evaluate.lmms_plugin.models")
    assert models.AVAILABLE_MODELS == {"shirg": "ShirgLMMs"}
    assert hasattr(lmms_plugin, "ShirgLMMs")
    assert "adapter" in inspect.signature(lmms_plugin.ShirgLMMs.__init__).parameters
    if not lmms_plugin.LMMS_AVAILABLE:
        with pytest.raises(ImportError, match="lmms"):
            lmms_plugin.ShirgLMMs(pretrained="/nowhere")


def test_parse_model_args_maps_strings_to_visual_options():
    parsed = parse_model_args(resolution="504", k="300", merge="false", weights="0.5,0.2,-0.1", other="x")
    opts = parsed["options"]
    assert opts.resolution == 504 and opts.k == 300 and opts.merge is False and opts.weights == (0.5, 0.2, -0.1)
    assert parsed["other"] == "x"


def test_generate_until_answers_as_model_answer_does(model):
    spy = Spy(model)
    img, other = _image(), _image((20, 20, 220))
    opts = parse_model_args(resolution="336")["options"]
    reqs = [GenerationRequest("How many?", {"max_new_tokens": 40, "temperature": 0}, [img, other]),
            GenerationRequest("What colour?", {"max_new_tokens": 16}, [other])]
    got = generate_until(spy, reqs, mode="shirg", options=opts, block_length=32)
    # 40 tokens round up to one more block of 32: L = 64, steps = L; the first image only
    ref0 = model.answer([img], ["How many?"], mode="shirg", options=VisualOptions(resolution=336), gen_length=64,
                        steps=64, block_length=32, temperature=0.0, kv_cache="native")[0].text
    ref1 = model.answer([other], ["What colour?"], mode="shirg", options=VisualOptions(resolution=336), gen_length=16,
                        steps=16, block_length=16, temperature=0.0, kv_cache="native")[0].text
    assert got == [ref0.strip(), ref1.strip()]
    (images, questions, kw) = spy.calls[0]
    assert images == [img] and questions == ["How many?"]
    assert kw["gen_length"] == 64 and kw["block_length"] == 32 and kw["steps"] == 64 and kw["mode"] == "shirg"
    assert spy.calls[1][2]["gen_length"] == 16 and spy.calls[1][2]["block_length"] == 16
    short = generate_until(spy, [GenerationRequest("What colour?", {"max_new_tokens": 16}, [other])], steps=4,
                           mode="lavida")
    assert spy.calls[-1][2]["steps"] == 4
    assert short == [model.answer([other], ["What colour?"], mode="lavida", gen_length=16, steps=4,
                                  block_length=16)[0].text.strip()]


def test_generate_until_cuts_the_real_answer_at_the_first_stop_string(model):
    img = _image()
    full = generate_until(model, [GenerationRequest("How many?", {"max_new_tokens": 16}, [img])], mode="lavida")[0]
    assert len(full) >= 3, f"the tiny model's answer is too short to cut: {full!r}"
    stop = full[1:3]
    cut = generate_until(model, [GenerationRequest("How many?", {"max_new_tokens": 16, "until": ["\nUSER:", stop]},
                                                   [img])], mode="lavida")[0]
    assert cut == full.split(stop)[0].strip() and len(cut) < len(full)
    single = generate_until(model, [GenerationRequest("How many?", {"max_new_tokens": 16, "until": stop}, [img])],
                            mode="lavida")[0]
    assert single == cut  # a bare string is one stop, not a list of characters
    absent = generate_until(model, [GenerationRequest("How many?", {"max_new_tokens": 16, "until": ["\nUSER:"]},
                                                      [img])], mode="lavida")[0]
    assert absent == full
    with pytest.raises(ConfigError, match="image"):
        generate_until(model, [GenerationRequest("q", {}, [])])


def test_a_failed_high_resolution_pass_is_a_failed_answer_of_that_mode(model, monkeypatch):
    """lmms-eval compares modes: a request whose shirg pass fails gets an empty (wrong) answer and is
    reported, never an answer of the lavida layout."""
    import shirg.model.visual as visual

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")

    img = _image()
    ok = generate_until(model, [GenerationRequest("How many?", {"max_new_tokens": 16}, [img])], mode="lavida")
    monkeypatch.setattr(visual, "dual_scale", out_of_memory)
    failures: list = []
    got = generate_until(model, [GenerationRequest("How many?", {"max_new_tokens": 16}, [img])] * 2, mode="shirg",
                         options=VisualOptions(resolution=336), failures=failures)
    assert got == ["", ""] and got != ok * 2
    assert [i for i, _ in failures] == [0, 1] and all("CUDA out of memory" in r for _, r in failures)


def test_load_model_applies_an_adapter_like_shirg_load(tmp_path, model):
    from test_eval_adapter import write_perturbed_adapter  # noqa: PLC0415  (the same helper as the eval CLI test)

    ckpt = write_tiny_lavida_checkpoint(tmp_path / "tiny")
    adapter = write_perturbed_adapter(ckpt, tmp_path / "adapter")
    plugin_model = load_model(str(ckpt), device="cpu", dtype="None", adapter=str(adapter))
    direct = shirg.load(ckpt, adapter=adapter)
    assert any("lora_" in n for n, _ in plugin_model.named_parameters())
    req = [GenerationRequest("How many?", {"max_new_tokens": 16}, [_image()])]
    opts = VisualOptions(resolution=336)
    via_plugin = generate_until(plugin_model, req, mode="shirg", options=opts)
    assert via_plugin == generate_until(direct, req, mode="shirg", options=opts)
    assert via_plugin != generate_until(model, req, mode="shirg", options=opts)


def test_lmms_registry_resolves_shirg_when_installed(monkeypatch):
    if not os.environ.get("SHIRG_TEST_LMMS"):  # CI sets it: there lmms-eval must be installed
        pytest.importorskip("lmms_eval")
    monkeypatch.setenv("LMMS_EVAL_PLUGINS", "shirg.evaluate.lmms_plugin")
    import lmms_eval.models as registry

    importlib.reload(registry)
    assert registry.get_model("shirg") is lmms_plugin.ShirgLMMs
