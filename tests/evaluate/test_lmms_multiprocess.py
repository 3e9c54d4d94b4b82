"""The lmms-eval plugin under lmms-eval's own CLI: one process, two processes (torchrun), batching.

The CLI tests run wherever lmms-eval is importable (``pip install -e '.[lmms]'`` then
``pip install --no-deps lmms-eval==0.7.3``, as ``.ci/run`` does), and fail without it under
``SHIRG_TEST_LMMS=1``; the batching tests always run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import shirg
from shirg.bundled import demo_sample, model_dir
from shirg.evaluate.lmms_plugin import GenerationRequest, generate_until, process_placement, split_answer_args

QUESTIONS = ["What number is written on the blue circle?", "What number is on the red circle?",
             "What shape is blue?", "What colour is the circle?"]
UTILS = '''from PIL import Image


def doc_to_visual(doc):
    return [Image.open(doc["image"]).convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def process_results(doc, results):
    return {"exact_match": float(results[0].strip() == doc["answer"])}
'''


@pytest.fixture(scope="module")
def model():
    return shirg.load(model_dir())


class Spy:
    def __init__(self, model) -> None:
        self.model, self.calls = model, []

    def answer(self, images, questions, **kw):
        self.calls.append((list(questions), kw))
        return self.model.answer(images, questions, **kw)


def test_requests_with_equal_settings_share_one_call(model):
    img = Image.open(demo_sample().image).convert("RGB")
    reqs = [GenerationRequest(q, {"max_new_tokens": n}, [img]) for q, n in zip(QUESTIONS, (8, 16, 8, 8), strict=True)]
    spy = Spy(model)
    got = generate_until(spy, reqs, mode="lowres", batch_size=2, cache="none")
    assert [len(q) for q, _ in spy.calls] == [2, 1, 1]  # three L=8 requests in batches of 2, one L=16
    assert spy.calls[0][0] == [QUESTIONS[0], QUESTIONS[2]] and all(kw["cache"] == "none" for _, kw in spy.calls)
    one_by_one = [generate_until(model, [r], mode="lowres", cache="none")[0] for r in reqs]
    assert got == one_by_one  # the requests' order, and batching changes no answer


def test_model_args_and_placement():
    rest, answer = split_answer_args({"cache": "none", "predict_mask": "True", "shift": "0.33", "k": "300"})
    assert answer == {"cache": "none", "predict_mask": True, "shift": 0.33} and rest == {"k": "300"}
    rank, world, device, _ = process_placement("cpu")
    assert (rank, world, str(device)) == (0, 1, "cpu")


# CI installs lmms-eval and sets SHIRG_TEST_LMMS=1, so there a missing lmms-eval fails these tests
needs_lmms = pytest.mark.skipif(not os.environ.get("SHIRG_TEST_LMMS") and importlib.util.find_spec("lmms_eval") is None,
                                reason="lmms-eval not installed (SHIRG_TEST_LMMS=1 turns this skip into a failure)")


def _task(tmp_path: Path) -> Path:
    folder = tmp_path / "tasks"
    folder.mkdir()
    image = str(demo_sample().image)
    rows = [{"id": i, "image": image, "question": q, "answer": "6"} for i, q in enumerate(QUESTIONS)]
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "utils.py").write_text(UTILS)
    (folder / "shirg_local.yaml").write_text(
        "task: shirg_local\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {folder / 'data.jsonl'}\ntest_split: test\noutput_type: generate_until\n"
        "doc_to_visual: !function utils.doc_to_visual\ndoc_to_text: !function utils.doc_to_text\n"
        "doc_to_target: answer\ngeneration_kwargs:\n  max_new_tokens: 8\n  temperature: 0\n"
        "process_results: !function utils.process_results\nmetric_list:\n  - metric: exact_match\n"
        "    aggregation: mean\n    higher_is_better: true\n")
    return folder


def _run(launcher: list[str], tmp_path: Path, out: Path) -> dict[int, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "PYTHONPATH": os.pathsep.join([str(Path(shirg.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    cmd = [*launcher, "-m", "lmms_eval", "--model", "shirg",
           "--model_args", f"pretrained={model_dir()},mode=lowres,device=cpu", "--tasks", "shirg_local",
           "--include_path", str(_task(tmp_path)), "--batch_size", "2", "--output_path", str(out), "--log_samples"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (samples,) = out.rglob("*samples_shirg_local.jsonl")
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    return {r["doc_id"]: r["filtered_resps"] if isinstance(r["filtered_resps"], str) else r["filtered_resps"][0]
            for r in rows}


def _expected(model) -> dict[int, str]:
    img = Image.open(demo_sample().image).convert("RGB")
    reqs = [GenerationRequest(q, {"max_new_tokens": 8, "temperature": 0}, [img]) for q in QUESTIONS]
    return dict(enumerate(generate_until(model, reqs, mode="lowres")))


@needs_lmms
def test_lmms_eval_cli_one_process(tmp_path, model):
    assert _run([sys.executable], tmp_path, tmp_path / "out") == _expected(model)


@needs_lmms
def test_lmms_eval_two_processes_gather_every_sample(tmp_path, model):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port)]
    assert _run(launcher, tmp_path, tmp_path / "out") == _expected(model)
