"""The lmms-eval plugin imports without lmms-eval; its request logic is a plain, testable function."""

from __future__ import annotations

import importlib

import pytest
from PIL import Image

from shirg.errors import ConfigError
from shirg.evaluate import lmms_plugin
from shirg.evaluate.lmms_plugin import GenerationRequest, generate_until, parse_model_args
from shirg.model.inference import Answer


class FakeModel:
    def __init__(self, text: str) -> None:
        self.text, self.calls = text, []

    def answer(self, images, questions, **kw):
        self.calls.append((images, questions, kw))
        return [Answer(text=self.text, token_ids=[])]


def test_module_imports_and_exposes_plugin_tables():
    models = importlib.import_module("shirg.evaluate.lmms_plugin.models")
    assert models.AVAILABLE_MODELS == {"shirg": "ShirgLMMs"}
    assert hasattr(lmms_plugin, "ShirgLMMs")
    if not lmms_plugin.LMMS_AVAILABLE:
        with pytest.raises(ImportError, match="lmms"):
            lmms_plugin.ShirgLMMs(pretrained="/nowhere")


def test_generate_until_maps_gen_kwargs_and_cuts_at_until():
    model = FakeModel("42 apples\nUSER: more")
    img = Image.new("RGB", (8, 8))
    opts = parse_model_args(resolution="504", k="300", merge="false", weights="0.5,0.2,-0.1")["options"]
    reqs = [GenerationRequest("How many?", {"max_new_tokens": 40, "until": ["\nUSER:"], "temperature": 0}, [img, img])]
    assert generate_until(model, reqs, mode="shirg", options=opts, block_length=32) == ["42 apples"]
    (images, questions, kw) = model.calls[0]
    assert images == [img] and questions == ["How many?"]
    assert kw["gen_length"] == 64 and kw["block_length"] == 32 and kw["steps"] == 64  # 40 rounded up to a block
    assert kw["mode"] == "shirg" and kw["options"].resolution == 504 and kw["options"].k == 300
    assert kw["options"].merge is False and kw["options"].weights == (0.5, 0.2, -0.1)
    short = generate_until(model, [GenerationRequest("q", {"max_new_tokens": 16, "until": "apples"}, [img])], steps=4)
    assert short == ["42"] and model.calls[1][2]["gen_length"] == 16 and model.calls[1][2]["steps"] == 4
    with pytest.raises(ConfigError, match="image"):
        generate_until(model, [GenerationRequest("q", {}, [])])


def test_lmms_registry_resolves_shirg_when_installed(monkeypatch):
    pytest.importorskip("lmms_eval")
    monkeypatch.setenv("LMMS_EVAL_PLUGINS", "shirg.evaluate.lmms_plugin")
    import lmms_eval.models as registry

    importlib.reload(registry)
    assert registry.get_model("shirg") is lmms_plugin.ShirgLMMs
