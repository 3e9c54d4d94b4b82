"""Every bad input is one line on stderr and exit code 2 (never a traceback), nothing half-written;
eval records a sample it cannot answer and goes on; train refuses an inexact resume."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import load_file, save_file

from shirg.cli import main
from shirg.model.loading import SHIRG_WEIGHTS
from shirg.testing import write_png_bomb, write_tiny_lavida_checkpoint

GEN = ["--gen-length", "4", "--steps", "2"]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bad")


@pytest.fixture(scope="module")
def tiny(root) -> Path:
    return write_tiny_lavida_checkpoint(root / "tiny")


@pytest.fixture(scope="module")
def image(root) -> Path:
    path = root / "img.png"
    Image.new("RGB", (64, 48), (20, 120, 200)).save(path)
    return path


def cli(argv: list, stdout: io.StringIO | None = None) -> tuple[int, list[str]]:
    """Run the CLI in this process: (exit code, non-empty stderr lines); stdout goes to ``stdout``. An
    uncaught exception (a traceback in real use) fails the test by propagating."""
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf), contextlib.redirect_stdout(stdout or io.StringIO()):
        try:
            rc = main([a if isinstance(a, str) else str(a) for a in argv])
        except SystemExit as e:  # argparse: --help or an argument error (its one line is printed)
            rc = e.code
    return rc, [ln for ln in buf.getvalue().splitlines() if ln.strip()]


def one_line(argv: list, *needles: str) -> str:
    rc, lines = cli(argv)
    assert rc == 2, (argv, lines)
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0] and lines[0].startswith("shirg"), lines
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


# ----------------------------------------------------------------------------- 3. broken checkpoint folders


def _shards(folder: Path) -> dict[str, str]:
    return json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]


def _break(folder: Path, how: str) -> None:
    index = folder / "model.safetensors.index.json"
    wm = _shards(folder)
    first = folder / sorted(set(wm.values()))[0]
    if how == "config_list":
        (folder / "config.json").write_text("[1, 2, 3]")
    elif how == "config_not_utf8":
        (folder / "config.json").write_bytes(b'{"d_model": "\xff\xfe"}')
    elif how == "config_bad_value":
        cfg = json.loads((folder / "config.json").read_text())
        cfg["d_model"] = "abc"
        (folder / "config.json").write_text(json.dumps(cfg))
    elif how == "index_list":
        index.write_text(json.dumps({"weight_map": list(wm)}))
    elif how == "index_wrong_shard":
        name = next(n for n, f in wm.items() if f != sorted(set(wm.values()))[-1])
        wm[name] = sorted(set(wm.values()))[-1]  # names a tensor the other shard does not hold
        index.write_text(json.dumps({"weight_map": wm}))
    elif how == "index_outside":
        name = next(iter(wm))
        wm[name] = "../tiny/" + wm[name]
        index.write_text(json.dumps({"weight_map": wm}))
    elif how == "int64_tensor":
        state = load_file(str(first))
        name = next(iter(state))
        state[name] = state[name].to(torch.int64)
        save_file(state, str(first))
    elif how == "truncated_shard":
        data = first.read_bytes()
        first.write_bytes(data[: len(data) // 2])
    elif how == "garbage_shard":
        first.write_bytes(b"\x00" * 64)
    elif how == "shirg_weights_corrupt":
        (folder / SHIRG_WEIGHTS).write_bytes(b"{not safetensors")
    else:
        raise AssertionError(how)


BROKEN = ["config_list", "config_not_utf8", "config_bad_value", "index_list", "index_wrong_shard", "index_outside",
          "int64_tensor", "truncated_shard", "garbage_shard", "shirg_weights_corrupt"]


@pytest.mark.parametrize("how", BROKEN)
def test_broken_checkpoint_is_a_one_line_error(tiny, image, tmp_path, how):
    folder = tmp_path / "ck"
    shutil.copytree(tiny, folder)
    _break(folder, how)
    one_line(["answer", "--model", folder, "--image", image, "--question", "what?", "--mode", "lowres", *GEN],
             str(folder))


@pytest.fixture(scope="module")
def bad_weights(root, tiny) -> dict[str, Path]:
    """A garbage SHIRG weights file, a truncated one, and adapter folders holding each."""
    real = root / "real_weights.safetensors"
    save_file({"coord_embed.x": torch.zeros(64, 64)}, str(real))
    truncated = root / "truncated.safetensors"
    truncated.write_bytes(real.read_bytes()[: real.stat().st_size // 2])
    garbage = root / "garbage.safetensors"
    garbage.write_bytes(b"\x07" * 100)
    out = {"garbage": garbage, "truncated": truncated}
    for name, f in list(out.items()):
        d = root / f"adapter-{name}"
        d.mkdir()
        shutil.copy(f, d / SHIRG_WEIGHTS)
        out[f"dir-{name}"] = d
        lora = root / f"lora-{name}"
        lora.mkdir()
        (lora / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4,
                                                              "target_modules": ["q_proj"]}))
        shutil.copy(f, lora / "adapter_model.safetensors")
        out[f"lora-{name}"] = lora
    return out


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_corrupt_weights_and_adapters_are_one_line_errors(tiny, image, root, bad_weights, tmp_path, kind):
    w, d, lora = bad_weights[kind], bad_weights[f"dir-{kind}"], bad_weights[f"lora-{kind}"]
    base = ["answer", "--model", tiny, "--image", image, "--question", "what?", "--mode", "lowres", *GEN]
    one_line([*base, "--shirg-weights", w], str(w))
    one_line([*base, "--adapter", d], SHIRG_WEIGHTS)
    one_line([*base, "--adapter", lora], "adapter_model.safetensors")
    data = _chartqa(tmp_path / "data", good=1)
    ev = ["eval", "--model", tiny, "--task", "chartqa", "--data", data, "--modes", "lowres", "--out",
          tmp_path / "ev", "--no-progress", "--overlays", "0", "--warmup", "0", *GEN]
    one_line([*ev, "--adapter", w], str(w))
    one_line([*ev, "--adapter", d])
    for adapter in (d, lora):
        out = tmp_path / f"export-{adapter.name}"
        one_line(["export", "--model", tiny, "--adapter", adapter, "--out", out])
        assert not out.exists() and not list(tmp_path.glob(f".export-{adapter.name}*"))  # nothing half-written


# ----------------------------------------------------------------------------- 3 and 5. bad arguments


@pytest.mark.parametrize("extra, needle", [
    (["--seed", str(2**70)], "--seed"),
    (["--seed", "-1"], "--seed"),
    (["--device", "meta"], "meta"),
    (["--device", "tpu:0"], "device"),
    (["--resolution", "0"], "--resolution"),
    (["--resolution", "14"], "resolution 14"),
    (["--resolution", "100"], "not a multiple of the patch size"),
    (["--resolution", "4046"], "out of range"),
    (["--resolution", "99999"], "resolution"),
    (["--block-length", "0"], "--block-length"),
    (["--gen-length", "0"], "--gen-length"),
    (["--steps", "-3"], "--steps"),
    (["--k", "0"], "--k"),
    (["--temperature", "nan"], "--temperature"),
    (["--temperature", "inf"], "--temperature"),
    (["--temperature", "-1"], "temperature"),
    (["--merge-eps", "nan"], "--merge-eps"),
    (["--merge-eps", "-inf"], "--merge-eps"),
    (["--weights", "nan,0,0"], "--weights"),
    (["--weights", "0.7,inf,-0.1"], "--weights"),
    (["--weights", ""], "--weights"),  # an empty value is not "no value" (found by the random test below)
    (["--mode", ""], "--mode"),
    (["--mode", ","], "--mode"),
    (["--mode", "lowres,,shirg"], "--mode"),
    (["--mode", "nope"], "nope"),
    (["--max-image-pixels", "0"], "--max-image-pixels"),
])
def test_bad_answer_arguments(tiny, image, extra, needle):
    line = one_line(["answer", "--model", tiny, "--image", image, "--question", "what?", "--mode", "shirg",
                     *GEN, *extra], needle)
    if extra[0] == "--resolution" and extra[1] == "14":
        assert "K " not in line  # the resolution is named, not a budget it leads to


def test_non_utf8_question_and_folder_image(tiny, image, root, tmp_path):
    bad = "caf\udce9?"  # how Python hands over the bytes b"caf\xe9?" of a Latin-1 terminal
    one_line(["answer", "--model", tiny, "--image", image, "--question", bad], "UTF-8")
    one_line(["select", "--vision", tiny, "--image", image, "--question", bad, "--out", tmp_path / "o.png"], "UTF-8")
    one_line(["answer", "--model", tiny, "--image", root, "--question", "what?"], "is a folder")


def test_output_paths_that_are_folders_are_named_not_temporaries(tiny, image, tmp_path):
    folder = tmp_path / "dir"
    folder.mkdir()
    line = one_line(["answer", "--model", tiny, "--image", image, "--question", "what?", "--mode", "lowres",
                     *GEN, "--json", folder], str(folder))
    assert ".dir." not in line and "tmp" not in line.replace(str(tmp_path), "")
    line = one_line(["select", "--vision", tiny, "--image", image, "--out", folder, "--resolution", "112"],
                    str(folder))
    assert ".dir." not in line
    assert [p.name for p in tmp_path.iterdir()] == ["dir"] and not list(folder.iterdir())  # no temporaries left


def test_make_tiny_refuses_a_non_empty_out_unless_forced(tmp_path):
    out = tmp_path / "ck"
    assert cli(["make-tiny", "--out", out, "--shards", "1"])[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (out / "stale.safetensors").write_bytes(b"old tensors")
    one_line(["make-tiny", "--out", out, "--seed", "3"], "--force")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != "stale.safetensors"} == before
    assert cli(["make-tiny", "--out", out, "--seed", "3", "--force"])[0] == 0
    assert "stale.safetensors" not in {p.name for p in out.iterdir()}  # replaced whole: no hybrid
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    file = tmp_path / "f"
    file.write_text("x")
    one_line(["make-tiny", "--out", file], "file")


# ----------------------------------------------------------------------------- 4. eval: per-sample errors


def _chartqa(folder: Path, good: int = 2, bad: bool = False) -> Path:
    """A ChartQA-release folder: ``good`` answerable samples, and with ``bad`` an unreadable image, an
    empty question and a question holding ``<image>``."""
    png = folder / "test" / "png"
    png.mkdir(parents=True, exist_ok=True)
    recs = []
    for i in range(good):
        Image.new("RGB", (50 + 10 * i, 40), (10 * i, 100, 200)).save(png / f"g{i}.png")
        recs.append({"imgname": f"g{i}.png", "query": f"What is bar {i}?", "label": str(i)})
    if bad:
        (png / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated junk")
        recs += [{"imgname": "junk.png", "query": "What is it?", "label": "1"},
                 {"imgname": "g0.png", "query": "   ", "label": "2"},
                 {"imgname": "g0.png", "query": "<image> again?", "label": "3"}]
    (folder / "test" / "test_human.json").write_text(json.dumps(recs))
    return folder


def test_eval_records_bad_samples_and_finishes(tiny, tmp_path):
    data = _chartqa(tmp_path / "data", good=2, bad=True)
    out = tmp_path / "out"
    argv = ["eval", "--model", tiny, "--task", "chartqa", "--data", data, "--modes", "lowres", "--out", out,
            "--no-progress", "--overlays", "1", "--warmup", "1", "--batch-size", "2", *GEN]
    rc, lines = cli(argv)
    assert rc == 0, lines
    recs = [json.loads(ln) for ln in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(recs) == 5  # every sample has its line: none silently dropped
    failed = {r["id"]: r["error"] for r in recs if r.get("error")}
    assert set(failed) == {"human-2", "human-3", "human-4"}
    assert "cannot read image" in failed["human-2"] and "empty" in failed["human-3"]
    assert "<image>" in failed["human-4"]
    assert all(r["failed"] and r["prediction"] == "" for r in recs if r.get("error"))
    assert all(r["scores"]["relaxed_accuracy"] == 0.0 for r in recs if r.get("error"))
    summary = json.loads((out / "summary.json").read_text())
    row = summary["rows"][0]
    assert row["n"] == 5 and row["failures"] == 3
    assert "failures (no answer" in (out / "summary.md").read_text()
    # the resumed run has nothing left to do and finishes with the same records
    assert cli(argv)[0] == 0
    again = [json.loads(ln) for ln in (out / "predictions.jsonl").read_text().splitlines()]
    assert again == recs
    # --strict stops at the first bad sample
    line = one_line([*argv[:argv.index("--out") + 1], tmp_path / "strict", *argv[argv.index("--out") + 2:],
                     "--strict"], "cannot read image")
    assert "junk.png" in line


@pytest.mark.parametrize("extra, needle", [
    (["--block-length", "3"], "multiple of block_length 3"),
    (["--steps", "3", "--block-length", "2"], "split evenly"),
    (["--temperature", "-1"], "temperature must be >= 0"),
])
def test_eval_settings_errors_stop_before_the_run_folder(tiny, tmp_path, extra, needle):
    """A bad setting is the run's error, not each sample's: exit 2 before any output exists."""
    data = _chartqa(tmp_path / "data", good=1)
    out = tmp_path / "out"
    one_line(["eval", "--model", tiny, "--task", "chartqa", "--data", data, "--modes", "lowres", "--out", out,
              "--no-progress", "--gen-length", "4", *extra], needle)
    assert not out.exists()


# ----------------------------------------------------------------------------- 3, 4, 5. training


TRAIN_YAML = """
model: {{path: "{ckpt}", dtype: float32}}
lora: {{rank: 4, alpha: 8, dropout: 0.1, vision_layers: [0]}}
trainable: {{components: [coord]}}
optim: {{lr_lora: 1.0e-2, lr_other: 1.0e-2, warmup_steps: 0, schedule: constant}}
data: {{mixture: "{mix}", mode: lowres, resolutions: [112], answer_length: 4}}
run: {{output_dir: "{out}", seed: 0, batch_size: 2, max_steps: 4, checkpoint_every: 2,
       gradient_checkpointing: false, mixed_precision: "no", progress: false}}
"""


def _toy_mixture(folder: Path) -> Path:
    """Three small images and a decompression bomb (skipped like any unreadable image)."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    recs = []
    for i in range(3):
        Image.new("RGB", (40 + 4 * i, 40), (60 * i, 80, 160)).save(folder / "img" / f"{i}.png")
        recs.append({"id": str(i), "image": f"{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nwhat color?"}, {"from": "gpt", "value": f"c{i}"}]})
    write_png_bomb(folder / "img" / "bomb.png", 12000, 12000)
    recs.append({"id": "bomb", "image": "bomb.png", "conversations": [
        {"from": "human", "value": "<image>\nwhat?"}, {"from": "gpt", "value": "x"}]})
    (folder / "train.json").write_text(json.dumps(recs))
    mix = folder / "mix.yaml"
    mix.write_text("sources:\n  - {name: toy, json: train.json, image_root: img}\n")
    return mix


@pytest.fixture(scope="module")
def stopped_run(root, tiny) -> dict:
    """A training run stopped after 3 of 4 steps (last checkpoint at step 2)."""
    out = root / "run"
    cfg = root / "train.yaml"
    cfg.write_text(TRAIN_YAML.format(ckpt=tiny, mix=_toy_mixture(root / "toy"), out=out))
    buf = io.StringIO()
    rc, lines = cli(["train", "--config", cfg, "--stop-after", "3"], stdout=buf)
    assert rc == 0, lines
    assert re.search(r"skipped images [1-9]", buf.getvalue()), buf.getvalue()  # the bomb was skipped, no crash
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-00000002"]
    return {"out": out, "cfg": cfg}


def _copy_run(stopped_run: dict, dest: Path) -> tuple[Path, list[str]]:
    out = dest / "run"
    shutil.copytree(stopped_run["out"], out)
    return out, ["train", "--config", stopped_run["cfg"], "--output-dir", out, "--resume"]


def test_resume_refuses_a_changed_batch_or_learning_rate(stopped_run, tmp_path):
    out, argv = _copy_run(stopped_run, tmp_path)
    one_line([*argv, "--set", "run.batch_size=4"], "run.batch_size: 2 -> 4", "--resume-with-changes")
    one_line([*argv, "--set", "optim.lr_lora=0.5"], "optim.lr_lora")
    assert not (out / "resume_changes.jsonl").exists()
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-00000002"]  # nothing trained
    rc, lines = cli([*argv, "--set", "optim.lr_lora=0.5", "--resume-with-changes"])
    assert rc == 0, lines
    rec = json.loads((out / "resume_changes.jsonl").read_text())
    assert rec["step"] == 2 and rec["changes"] == {"optim.lr_lora": {"saved": 0.01, "now": 0.5}}
    # book-keeping may change freely
    out2, argv2 = _copy_run(stopped_run, tmp_path / "b")
    assert cli([*argv2, "--set", "run.checkpoint_every=1", "--set", "run.log_every=2"])[0] == 0


def test_resume_reads_a_setting_older_runs_lack_as_its_default(stopped_run, tmp_path):
    """A run written before a setting existed (here: data.patch_aux removed from its saved configs)
    resumes when the setting keeps its default, and is refused when it does not."""
    out, argv = _copy_run(stopped_run, tmp_path)
    for path in [out / "config.yaml", *out.glob("checkpoints/*/config.yaml")]:
        saved = yaml.safe_load(path.read_text())
        assert "patch_aux" in saved["data"]
        del saved["data"]["patch_aux"]
        path.write_text(yaml.safe_dump(saved))
    one_line([*argv, "--set", "data.patch_aux.heads=[shape]"], "data.patch_aux.heads: ['colour'] -> ['shape']")
    rc, lines = cli(argv)
    assert rc == 0, lines
    assert not (out / "resume_changes.jsonl").exists()


def test_resume_tolerates_a_torn_last_metrics_line(stopped_run, tmp_path):
    out, argv = _copy_run(stopped_run, tmp_path)
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "epoch": 1, "lo')  # killed mid-write
    rc, lines = cli(argv)
    assert rc == 0, lines
    steps = [json.loads(ln)["step"] for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_resume_from_a_corrupt_checkpoint_is_one_line(stopped_run, tmp_path):
    out, argv = _copy_run(stopped_run, tmp_path)
    weights = out / "checkpoints" / "step-00000002" / "trainable.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    one_line(argv, "trainable.safetensors")
    out, argv = _copy_run(stopped_run, tmp_path / "b")
    (out / "checkpoints" / "step-00000002" / "optimizer.pt").write_bytes(b"PK\x03\x04 torn")
    one_line(argv, "optimizer.pt")


def test_bad_training_configs(tmp_path, tiny):
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("5\n")
    one_line(["train", "--config", scalar], "mapping")
    cfg = tmp_path / "ok.yaml"
    cfg.write_text(f"model: {{path: {tiny}}}\nrun: {{output_dir: {tmp_path / 'o'}}}\n")
    one_line(["train", "--config", cfg, "--set", "run.max_steps=-1"], "run.max_steps")
    one_line(["train", "--config", cfg, "--set", "run.max_steps=0"], "run.max_steps")
    one_line(["train", "--config", cfg, "--set", "optim.lr_lora=.nan"], "optim.lr_lora")
    one_line(["train", "--config", cfg, "--set", "run.epochs=.inf"], "run.epochs")
    one_line(["train", "--config", cfg, "--set", "run.seed=[1"], "run.seed")
    one_line(["train", "--config", cfg, "--resume-with-changes"], "--resume")
    assert not (tmp_path / "o").exists()


def _single_value_options() -> list[tuple[str, str]]:
    """(command, option) for every option of every command that takes exactly one value."""
    from shirg.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sorted((name, a.option_strings[-1]) for name, p in sub.choices.items() for a in p._actions
                  if a.option_strings and a.nargs is None and not isinstance(a, argparse._HelpAction))


@pytest.mark.parametrize("command, option", _single_value_options())
def test_an_empty_value_is_not_the_default(command, option):
    """`--model=` or `--api-key=` once meant "not given" (the bundled model, an open server, the default
    grid); only leaving an option out means its default. No other argument is needed: the empty value
    is refused while the command line is read, before any file is touched."""
    for empty in ("", "  "):
        one_line([command, f"{option}={empty}"], option, "empty")


# ----------------------------------------------------------------------------- property: random bad values

BAD_INT = st.one_of(st.integers(max_value=0).map(str), st.sampled_from(["abc", "1.5", "", "0x10", "1e3", "--"]))
BAD_FLOAT = st.one_of(st.sampled_from(["nan", "inf", "-inf", "NaN", "abc", "", "1,2"]),
                      st.text(alphabet="xyz!@", min_size=1, max_size=4))
BAD_RESOLUTION = st.one_of(st.integers(max_value=27), st.integers(min_value=4033, max_value=10**9),
                           st.integers(min_value=29, max_value=4031).filter(lambda r: r % 14 and r != 384)).map(str)
BAD_SEED = st.one_of(st.integers(max_value=-1), st.integers(min_value=2**63, max_value=2**80)).map(str)
BAD_NAMES = st.sampled_from(["", ",", " , ", "lowres,", ",shirg", "a,,b"])
COMMON = {
    "--k": BAD_INT, "--seed": BAD_SEED, "--resolution": BAD_RESOLUTION, "--merge-eps": BAD_FLOAT,
    "--weights": st.one_of(BAD_FLOAT, st.sampled_from(["1,2", "1,2,3,4", "nan,0,0", "0,inf,0", "a,b,c"])),
    "--max-image-pixels": BAD_INT, "--max-image-bytes": BAD_INT,
    "--device": st.sampled_from(["meta", "tpu", "cuda:x", "", "gpu0", "cpu:-1"]),
}
GENERATION = {"--gen-length": BAD_INT, "--steps": BAD_INT, "--block-length": BAD_INT, "--temperature": BAD_FLOAT}
PER_COMMAND = {
    "answer": COMMON | GENERATION | {"--mode": BAD_NAMES},
    "select": COMMON,
    "eval": COMMON | GENERATION | {
        "--modes": BAD_NAMES, "--batch-size": BAD_INT, "--limit": BAD_INT,
        "--warmup": st.integers(max_value=-1).map(str), "--overlays": st.integers(max_value=-1).map(str)},
}


@st.composite
def bad_invocation(draw):
    command = draw(st.sampled_from(sorted(PER_COMMAND)))
    options = PER_COMMAND[command]
    names = draw(st.lists(st.sampled_from(sorted(options)), min_size=1, max_size=3, unique=True))
    return command, [(n, draw(options[n])) for n in names]


@pytest.fixture(scope="module")
def eval_data(root) -> Path:
    return _chartqa(root / "eval_data", good=1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=bad_invocation())
def test_random_bad_arguments_are_one_line_errors(case, tiny, image, eval_data):
    with tempfile.TemporaryDirectory() as tmp:  # a fresh folder per example (tmp_path is shared by them)
        _check_bad_invocation(case, tiny, image, eval_data, Path(tmp))


def _check_bad_invocation(case, tiny, image, eval_data, tmp_path: Path) -> None:
    command, options = case
    base = {
        "answer": ["answer", "--model", tiny, "--image", image, "--question", "what?"],
        "select": ["select", "--vision", tiny, "--image", image, "--out", tmp_path / "sel.png"],
        "eval": ["eval", "--model", tiny, "--task", "chartqa", "--data", eval_data, "--out", tmp_path / "ev",
                 "--no-progress"],
    }[command]
    argv = [*base]
    for name, value in options:
        argv.append(f"{name}={value}")  # "=": a value starting with "-" is still this option's value
    one_line(argv)
    assert not (tmp_path / "sel.png").exists() and not (tmp_path / "ev").exists()
