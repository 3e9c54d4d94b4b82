"""Training: LoRA targets and counts, data mixtures, the diffusion loss, overfitting, exact resume,
two-process DDP, adapter round trip and merged export, corrupt-image handling."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import shirg
from shirg.errors import ConfigError
from shirg.model.lavida import LavidaConfig, LavidaModel
from shirg.presets import preset_config
from shirg.testing import write_tiny_lavida_checkpoint
from shirg.train.config import config_from_dict, load_config
from shirg.train.data import (
    PositionSampler,
    TrainDataset,
    apply_sampling,
    collate,
    convert_chartqa,
    convert_docvqa,
    convert_parquet,
    convert_textvqa,
    load_mixture,
)
from shirg.train.lora import analytic_lora_count, make_trainable, matched_modules, target_regex
from shirg.train.loss import complementary_masks, visual_blocks
from shirg.train.trainer import (
    Trainer,
    checkpoint_dirs,
    configure_deepspeed,
    gathered,
    grad_norm_value,
    is_deepspeed,
    loss_divisor,
    replace_dir,
    write_dir,
    zero_stage,
)

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
TINY = CONFIGS / "train_tiny_cpu.yaml"
COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30), "black": (0, 0, 0)}


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    """Tiny checkpoint whose LM head has a realistic logit scale: with N(0, 0.02) weights the frozen
    head can move the loss by about one nat at most, which hides whether training works."""
    folder = write_tiny_lavida_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")
    index = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    shard = folder / index["model.transformer.ff_out.weight"]
    state = load_file(str(shard))
    state["model.transformer.ff_out.weight"] = state["model.transformer.ff_out.weight"] * 8
    save_file(state, str(shard), metadata={"format": "pt"})
    return folder


def write_toy_data(folder: Path, n: int = 8, corrupt: int = 0, missing: int = 0) -> Path:
    """n small coloured images with 'what color' questions; returns a mixture YAML."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    records = []
    for i in range(n):
        colour = names[i % len(names)]
        arr = np.full((60 + 8 * i, 80, 3), COLOURS[colour], dtype=np.uint8)
        arr[5:15, 5 : 10 + 6 * i] = 128
        Image.fromarray(arr).save(folder / "img" / f"{i}.png")
        records.append({"id": str(i), "image": f"{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nwhat color is the image?"},
            {"from": "gpt", "value": f"{colour} {i}"}]})
    for j in range(corrupt):
        (folder / "img" / f"bad{j}.png").write_bytes(b"\x89PNG not really an image")
        records.append({"image": f"bad{j}.png", "conversations": [
            {"from": "human", "value": "<image>\nwhat?"}, {"from": "gpt", "value": "x"}]})
    for j in range(missing):
        records.append({"image": f"gone{j}.png", "conversations": [
            {"from": "human", "value": "<image>\nwhat?"}, {"from": "gpt", "value": "x"}]})
    (folder / "train.json").write_text(json.dumps(records))
    mix = folder / "mix.yaml"
    mix.write_text("sources:\n  - {name: toy, json: train.json, image_root: img}\n")
    return mix


def tiny_config(ckpt: Path, mix: Path, out: Path, *overrides: str):
    return load_config(TINY, [f"model.path={ckpt}", f"data.mixture={mix}", f"run.output_dir={out}", *overrides])


def losses(out: Path) -> list[float]:
    return [json.loads(ln)["loss"] for ln in (out / "metrics.jsonl").read_text().splitlines() if ln.strip()]


def run_trainer(cfg, **kw) -> Trainer:
    trainer = Trainer(cfg, **kw)
    trainer.setup()
    trainer.result = trainer.run()
    return trainer


# ----------------------------------------------------------------------------- what is trained


def test_trainable_count_at_lavida_8b_shapes_is_analytic():
    cfg = load_config(CONFIGS / "train_shirg.yaml")
    with torch.device("meta"):
        model = LavidaModel(LavidaConfig.from_dict(preset_config("lavida-8b")))
    regex = target_regex(cfg.lora, model.config.llm.n_layers)
    lora = analytic_lora_count(model, regex, cfg.lora.rank)
    # rank 64: projector 64*(1152+4096) + 64*(4096+4096); 12 SigLIP q/k/v Linear(1152, 1152)
    assert lora == 64 * (1152 + 4096) + 64 * (4096 + 4096) + 12 * 64 * (1152 + 1152) == 2_629_632
    coord = 4 * 128 + 128 + 128 * 1152 + 1152
    tm = make_trainable(model, cfg)
    count = tm.trainable_count()
    print(f"trainable parameters at LaViDa-8B shapes (rank 64): {count:,} (LoRA {lora:,} + coord {coord:,})")
    assert count == lora + coord == 2_778_880
    assert all(("lora_" in n) or n.startswith("shirg.coord_embed.") for n, _ in tm.named_trainable())


def test_lora_regex_misses_every_llm_module_and_the_head():
    cfg = load_config(CONFIGS / "train_shirg.yaml")
    with torch.device("meta"):
        model = LavidaModel(LavidaConfig.from_dict(preset_config("lavida-8b")))
    regex = target_regex(cfg.lora, model.config.llm.n_layers)
    targets = set(matched_modules(model, regex))
    vision = "model.vision_tower.vision_tower.vision_model.encoder.layers"
    expected = {"model.mm_projector.0", "model.mm_projector.2"} | {
        f"{vision}.{i}.self_attn.{p}" for i in range(4) for p in ("q_proj", "k_proj", "v_proj")}
    assert targets == expected
    llm = [n for n, _ in model.named_modules() if n.startswith("model.transformer")]
    assert len(llm) > 32 * 7 and not any(re.fullmatch(regex, n) for n in llm)
    assert not re.fullmatch(regex, "model.transformer.ff_out")
    # the trap the anchored regex avoids: a bare name hits the LLaDA blocks too
    assert any(re.fullmatch(r".*q_proj", n) for n in llm)
    # LoRA on the LLM is an option
    cfg.lora.llm_layers = "all"
    with_llm = matched_modules(model, target_regex(cfg.lora, model.config.llm.n_layers))
    assert len(with_llm) == len(expected) + 32 * 4


# ----------------------------------------------------------------------------- config and data


def test_config_rejects_unknown_keys_and_reads_yaml_numbers():
    with pytest.raises(ConfigError, match="unknown key"):
        config_from_dict({"lora": {"rnak": 8}})
    cfg = config_from_dict({"optim": {"lr_lora": "2e-5"}, "lora": {"rank": 32}})
    assert cfg.optim.lr_lora == 2e-5 and cfg.lora.rank == 32
    for path in CONFIGS.glob("train_*.yaml"):
        load_config(path)
    full = load_config(CONFIGS / "train_full_finetune.yaml")
    assert not full.lora.enabled and set(full.trainable.components) == {"vision", "projector", "llm"}
    assert full.data.mode == "full" and full.data.resolutions == [672]
    import yaml

    for path in (CONFIGS / "accelerate").glob("*.yaml"):
        assert yaml.safe_load(path.read_text())["num_processes"] >= 2


def test_mixture_sampling_modes(tmp_path):
    records = [{"image": f"{i}.png", "conversations": [{"from": "human", "value": f"<image>\nq{i}"},
                                                      {"from": "gpt", "value": f"a{i}"}]} for i in range(20)]
    (tmp_path / "r.json").write_text(json.dumps(records))
    (tmp_path / "mix.yaml").write_text(
        "seed: 3\nsources:\n"
        "  - {name: all, json: r.json, image_root: imgs, sample: all}\n"
        "  - {name: first, json: r.json, sample: 'first:2'}\n"
        "  - {name: rand, json: r.json, sample: 'random:5'}\n"
        "  - {name: pct, json: r.json, sample: '25%'}\n")
    samples = load_mixture(tmp_path / "mix.yaml")
    by = {s: [x for x in samples if x.source == s] for s in ("all", "first", "rand", "pct")}
    assert len(by["all"]) == 20 and [x.question for x in by["first"]] == ["q0", "q1"]
    assert len(by["rand"]) == 5 and len(by["pct"]) == 5
    assert by["all"][0].image == str(tmp_path / "imgs" / "0.png") and by["all"][0].answer == "a0"
    assert load_mixture(tmp_path / "mix.yaml") == samples  # seeded
    assert [x.question for x in load_mixture(tmp_path / "mix.yaml", seed=4) if x.source == "rand"] != \
        [x.question for x in by["rand"]]
    with pytest.raises(ConfigError, match="sample must be"):
        apply_sampling(records, "some", 0, "x")


def test_converters(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps([{"imgname": "a.png", "query": "max?", "label": "12"}]))
    assert convert_chartqa([tmp_path / "c.json"])[0]["image"] == "png/a.png"
    (tmp_path / "d.json").write_text(json.dumps({"data": [
        {"questionId": 1, "question": "date?", "image": "documents/x.png", "answers": ["1 May", "May 1"]}]}))
    rec = convert_docvqa(tmp_path / "d.json")[0]
    assert rec["image"] == "documents/x.png" and rec["conversations"][1]["value"] == "1 May"
    (tmp_path / "t.json").write_text(json.dumps({"data": [
        {"question_id": 5, "question": "brand?", "image_id": "ab", "answers": ["sony", "Sony", "sony", "lg"]}]}))
    rec = convert_textvqa(tmp_path / "t.json")[0]
    assert rec["image"] == "train_images/ab.jpg" and rec["conversations"][1]["value"] == "sony"
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, format="PNG")
    table = pa.table({"image": [{"bytes": buf.getvalue(), "path": "p.png"}], "question": ["colour?"],
                      "answers": [["red", "red", "pink"]]})
    pq.write_table(table, tmp_path / "s.parquet")
    rec = convert_parquet([tmp_path / "s.parquet"], tmp_path / "imgs")[0]
    assert rec["conversations"][1]["value"] == "red"
    assert Image.open(tmp_path / "imgs" / rec["image"]).size == (8, 8)


def test_sampler_shards_one_global_order():
    one = [k for b in PositionSampler(12, 4, 1, 0, seed=1, stop=6) for k in b]
    two = [PositionSampler(12, 2, 2, r, seed=1, stop=6) for r in (0, 1)]
    interleaved = [k for b0, b1 in zip(*two, strict=True) for k in b0 + b1]
    assert one == interleaved
    assert sorted(i for e, i in one if e == 0) == list(range(12))
    resumed = [k for b in PositionSampler(12, 4, 1, 0, seed=1, start=4, stop=6) for k in b]
    assert resumed == one[16:]


def test_complementary_masks_cover_each_slot_once():
    m1 = complementary_masks(list(range(200)), 16)
    m2 = ~m1
    assert torch.equal(m1 ^ m2, torch.ones_like(m1))
    rate = m1.float().mean(1)
    assert rate.min() < 0.15 and rate.max() > 0.85  # p spans (0, 1)
    assert torch.equal(complementary_masks([7, 8], 16), complementary_masks([7, 8], 16))


# ----------------------------------------------------------------------------- training


def _batch_logits(trainer_or_model, dataset, keys):
    """Deterministic answer logits of a batch (fixed masks), for round-trip comparisons."""
    from shirg.model.visual import splice
    from shirg.train.loss import answer_logits

    model = trainer_or_model
    batch = collate([dataset[k] for k in keys])
    with torch.no_grad():
        blocks = visual_blocks(model, batch, "shirg", {})
        prefix, mask = splice(model, batch.prompt_ids, blocks)
        answer = batch.answer_ids.masked_fill(complementary_masks(batch.noise_seeds, batch.answer_ids.shape[1]),
                                              model.config.llm.mask_token_id)
        embeds = torch.cat([prefix, model.model.embed(answer)], 1)
        full = torch.cat([mask, torch.ones_like(answer, dtype=torch.bool)], 1)
        pos = torch.cat([torch.arange(prefix.shape[1]).expand(len(batch), -1),
                         mask.sum(1, keepdim=True) + torch.arange(answer.shape[1])], 1)
        return answer_logits(model, embeds, full, pos, answer.shape[1])


def test_overfit_frozen_weights_adapter_round_trip_and_export(tiny_ckpt, tmp_path, monkeypatch):
    mix = write_toy_data(tmp_path / "data")
    out = tmp_path / "run"
    cfg = tiny_config(tiny_ckpt, mix, out, "run.max_steps=25", "run.checkpoint_every=100", "lora.dropout=0.0")
    trainer = run_trainer(cfg)
    trace = losses(out)
    assert len(trace) == 25
    first, last = trace[0], float(np.mean(trace[-5:]))
    assert last < first - 1.0, f"no clear overfitting: first {first:.3f}, mean of last 5 {last:.3f}"

    # frozen weights bit-identical; LoRA and the coordinate embedding moved
    base = shirg.load(tiny_ckpt)
    original = dict(base.named_parameters())
    lavida = trainer.tm.lavida
    changed = []
    for name, p in lavida.named_parameters():
        key = name.replace(".base_layer.", ".")
        if "lora_" in name or name.startswith("shirg."):
            changed.append(name)
            continue
        assert torch.equal(p.detach(), original[key].detach()), f"frozen weight {name} changed"
    assert any("lora_B" in n for n in changed)
    for name in changed:
        if "lora_B" in name or "coord_out" in name:  # both start at zero
            assert dict(lavida.named_parameters())[name].abs().sum() > 0, name

    # adapter folder: only adapter weights, as safetensors
    adapter = Path(trainer.result["adapter"])
    saved = load_file(str(adapter / "adapter_model.safetensors"))
    assert saved and all("lora_" in k for k in saved)
    assert not list(adapter.glob("*.bin")) and (adapter / "shirg_weights.safetensors").is_file()

    lavida.eval()
    keys = [(0, i) for i in range(4)]
    reference = _batch_logits(lavida, trainer.dataset, keys)
    loaded = shirg.load(tiny_ckpt, adapter=adapter)
    torch.testing.assert_close(_batch_logits(loaded, trainer.dataset, keys), reference, rtol=0, atol=1e-5)
    untrained = _batch_logits(base, trainer.dataset, keys)
    assert (untrained - reference).abs().max() > 1e-2

    # writing the final adapter again swaps a complete folder in; a failed write keeps the old one
    before = {f.name: f.read_bytes() for f in adapter.iterdir()}
    import shirg.train.trainer as trainer_module  # the trainer's own reference to save_adapter

    def broken_save(peft_model, lavida, out_dir, save_shirg=True):
        Path(out_dir).mkdir(parents=True)
        (Path(out_dir) / "partial").write_text("x")
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(trainer_module, "save_adapter", broken_save)
        with pytest.raises(OSError, match="disk full"):
            trainer.finish()
    assert {f.name: f.read_bytes() for f in adapter.iterdir()} == before
    trainer.finish()
    assert {f.name: f.read_bytes() for f in adapter.iterdir()} == before
    assert not [f.name for f in out.iterdir() if f.name.startswith(".")], "temporary files left behind"

    from shirg.cli import main

    exported = tmp_path / "merged"
    assert main(["export", "--model", str(tiny_ckpt), "--adapter", str(adapter), "--out", str(exported)]) == 0
    merged = shirg.load(exported)
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(_batch_logits(merged, trainer.dataset, keys), reference, rtol=0, atol=1e-4)
    answer = merged.answer([Image.open(tmp_path / "data" / "img" / "0.png")], ["what color is the image?"],
                           mode="shirg", gen_length=8, steps=8, block_length=8)[0]
    assert isinstance(answer.text, str)
    image = tmp_path / "data" / "img" / "0.png"
    assert main(["answer", "--model", str(tiny_ckpt), "--adapter", str(adapter), "--image", str(image),
                 "--question", "what color is the image?", "--mode", "shirg", "--resolution", "112",
                 "--gen-length", "8", "--steps", "8"]) == 0


def test_resume_gives_the_uninterrupted_losses(tiny_ckpt, tmp_path):
    mix = write_toy_data(tmp_path / "data")
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    # dropout on, so the restored RNG state matters
    run_trainer(tiny_config(tiny_ckpt, mix, straight, "lora.dropout=0.1"))
    run_trainer(tiny_config(tiny_ckpt, mix, broken, "lora.dropout=0.1"), stop_after=4)
    assert len(losses(broken)) == 4 and [p.name for p in checkpoint_dirs(broken)] == ["step-00000003"]
    with pytest.raises(ConfigError, match="--resume"):
        Trainer(tiny_config(tiny_ckpt, mix, broken, "lora.dropout=0.1")).setup()
    resumed = run_trainer(tiny_config(tiny_ckpt, mix, broken, "lora.dropout=0.1"), resume=True)
    assert resumed.result["steps"] == 6
    a, b = losses(straight), losses(broken)
    assert len(a) == len(b) == 6
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)
    assert not list((broken / "checkpoints").glob(".tmp-*"))
    # config.yaml and the trimmed metrics.jsonl were rewritten atomically: no temporaries left
    assert not [f.name for f in broken.iterdir() if f.name.startswith(".")]
    assert (broken / "config.yaml").is_file() and (broken / "adapter").is_dir()
    state = json.loads((checkpoint_dirs(broken)[-1] / "state.json").read_text())
    assert state["deepspeed"] is False


def test_two_process_ddp_matches_single_process(tiny_ckpt, tmp_path):
    mix = write_toy_data(tmp_path / "data")
    common = ["run.max_steps=3", "run.checkpoint_every=3", "lora.dropout=0.0"]
    single = tmp_path / "single"
    run_trainer(tiny_config(tiny_ckpt, mix, single, "run.batch_size=4", *common))
    ddp = tmp_path / "ddp"
    # accelerate's `--cpu` launcher starts ONE process (multi-CPU needs mpirun); this config starts two
    # through torchrun, and the trainer joins them in a gloo group on CPU.
    launch_config = CONFIGS / "accelerate" / "cpu_2proc.yaml"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(launch_config),
           "-m", "shirg.cli", "train", "--config", str(TINY),
           "--model", str(tiny_ckpt), "--output-dir", str(ddp), "--set", f"data.mixture={mix}",
           "--set", "run.batch_size=2", *[x for c in common for x in ("--set", c)]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = json.loads((checkpoint_dirs(ddp)[-1] / "state.json").read_text())
    assert state["num_processes"] == 2 and state["samples"] == 12
    np.testing.assert_allclose(losses(ddp), losses(single), rtol=0, atol=1e-4)


def test_corrupt_and_missing_images_are_skipped_and_counted(tiny_ckpt, tmp_path, caplog):
    mix = write_toy_data(tmp_path / "data", n=6, corrupt=1, missing=1)
    cfg = tiny_config(tiny_ckpt, mix, tmp_path / "run", "run.max_steps=2", "run.checkpoint_every=2",
                      "run.batch_size=8")
    with caplog.at_level("WARNING"):
        trainer = run_trainer(cfg)
    assert trainer.result["skipped_images"] == 4  # 2 bad records x 2 epochs (one global batch each)
    assert sum("skipping a training sample" in r.message for r in caplog.records) == 4
    assert all(np.isfinite(losses(tmp_path / "run")))


def test_a_micro_batch_of_only_unreadable_images_is_skipped_not_a_crash(tiny_ckpt, tmp_path, caplog):
    mix = write_toy_data(tmp_path / "data", n=0, missing=4)
    cfg = tiny_config(tiny_ckpt, mix, tmp_path / "run", "run.max_steps=1", "run.checkpoint_every=1",
                      "run.batch_size=4")
    with caplog.at_level("WARNING"):
        trainer = run_trainer(cfg)
    assert trainer.result["skipped_images"] == 4 and trainer.result["steps"] == 1


def test_dataset_answer_is_padded_with_supervised_eos(tiny_ckpt, tmp_path):
    model = shirg.load(tiny_ckpt)
    ds = TrainDataset([], model.tokenizer, answer_length=8, eos_id=model.config.llm.eos_token_id,
                      eot_id=model.config.eot_token_id, resolutions=[384, 512, 672], snap=56, seed=0)
    ids, truncated = ds.encode_answer("red")
    assert len(ids) == 8 and not truncated
    n = ids.index(model.config.eot_token_id)
    assert ids[n + 1 :] == [model.config.llm.eos_token_id] * (7 - n)
    assert ds.resolutions == [392, 504, 672]


# ----------------------------------------------------------------------------- DeepSpeed decisions
# deepspeed is not installed here: these test the trainer's DeepSpeed-specific decisions as pure
# functions. The DeepSpeed path as a whole (engine step, ZeRO checkpoints, gathering) is untested.


def test_deepspeed_is_recognised_from_accelerates_distributed_type():
    from accelerate.utils import DistributedType

    assert is_deepspeed(DistributedType.DEEPSPEED) and is_deepspeed("DEEPSPEED")
    assert not any(is_deepspeed(t) for t in (DistributedType.NO, DistributedType.MULTI_GPU,
                                             DistributedType.MULTI_CPU, DistributedType.FSDP))
    from types import SimpleNamespace

    plugin = SimpleNamespace(zero_stage=3)
    assert zero_stage(SimpleNamespace(distributed_type=DistributedType.DEEPSPEED,
                                      state=SimpleNamespace(deepspeed_plugin=plugin))) == 3
    assert zero_stage(SimpleNamespace(distributed_type=DistributedType.MULTI_GPU)) == 0


def test_loss_is_scaled_by_one_over_accum_exactly_once():
    assert loss_divisor(deepspeed=False, accum=4) == 4
    assert loss_divisor(deepspeed=False, accum=4, accelerator_accum=4) == 1  # accelerate divides itself
    assert loss_divisor(deepspeed=True, accum=4, accelerator_accum=4) == 1  # the engine divides
    assert loss_divisor(deepspeed=True, accum=1) == 1
    with pytest.raises(ValueError):
        loss_divisor(False, 0)

    # the accumulated gradient equals the gradient of the mean loss over all micro-batches, whichever
    # component divides: accelerate's backward (by its own steps) or DeepSpeed's engine (by accum)
    torch.manual_seed(0)
    x, y = torch.randn(8, 3), torch.randn(8)
    w = torch.randn(3, requires_grad=True)
    ((x @ w - y) ** 2).mean().backward()
    want = w.grad.clone()
    accum = 4
    for deepspeed, acc_accum in ((False, 1), (False, 2), (False, 4), (True, 4)):
        w.grad = None
        backend_divides = accum if deepspeed else acc_accum  # what accelerate or the engine divides by
        for xb, yb in zip(x.chunk(accum), y.chunk(accum), strict=True):
            loss = ((xb @ w - yb) ** 2).mean() / loss_divisor(deepspeed, accum, acc_accum)
            (loss / backend_divides).backward()
        torch.testing.assert_close(w.grad, want, rtol=1e-6, atol=1e-6)


def test_grad_norm_tolerates_none_and_non_finite():
    assert grad_norm_value(None) is None  # accelerate under DeepSpeed may return None
    assert grad_norm_value(torch.tensor(2.5)) == 2.5
    assert grad_norm_value(1.25) == 1.25
    assert grad_norm_value(float("nan")) is None and grad_norm_value(torch.tensor(float("inf"))) is None
    json.dumps({"grad_norm": grad_norm_value(None)})  # stays valid JSON in metrics.jsonl


def test_deepspeed_config_follows_the_training_config():
    cfg = load_config(TINY, ["run.batch_size=4", "run.grad_accum=3", "optim.max_grad_norm=0.5"])
    ds = {"gradient_accumulation_steps": "auto", "train_micro_batch_size_per_gpu": "auto",
          "zero_optimization": {"stage": 2}}
    assert configure_deepspeed(ds, cfg, num_processes=8) == []
    assert ds["gradient_accumulation_steps"] == 3 and ds["train_micro_batch_size_per_gpu"] == 4
    assert ds["train_batch_size"] == 4 * 3 * 8 and ds["gradient_clipping"] == 0.5
    assert ds["zero_optimization"] == {"stage": 2}
    # a launch config that disagrees (the shipped zero3 config says 4) is overridden, with a warning
    ds = {"gradient_accumulation_steps": 4, "gradient_clipping": 1.0}
    warnings = configure_deepspeed(ds, cfg, num_processes=2)
    assert len(warnings) == 2 and "gradient_accumulation_steps=4" in warnings[0]
    assert ds["gradient_accumulation_steps"] == 3 and ds["gradient_clipping"] == 0.5
    cfg = load_config(TINY, ["optim.max_grad_norm=null"])
    ds = {}
    configure_deepspeed(ds, cfg, 1)
    assert ds["gradient_clipping"] == 0.0  # DeepSpeed: 0 = no clipping


def test_deepspeed_is_never_imported_unless_used():
    with gathered([torch.nn.Parameter(torch.ones(2))], stage=2):
        pass
    code = "import sys, shirg.train.trainer, shirg.train; assert 'deepspeed' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_accelerate_accumulate_marks_the_last_micro_batch(tmp_path):
    """The DeepSpeed loop relies on accelerate's accumulate() setting sync_gradients on exactly the
    last of grad_accum micro-batches (which is where the engine steps), and on backward() dividing by
    gradient_accumulation_steps outside DeepSpeed. Checked with the installed accelerate, on CPU, in a
    separate process so accelerate's singletons do not leak into the other tests."""
    code = """
import torch
from accelerate import Accelerator
acc = Accelerator(cpu=True)
acc.gradient_accumulation_steps = 3
model = acc.prepare(torch.nn.Linear(2, 1))
flags = []
for _ in range(6):
    with acc.accumulate(model):
        flags.append(acc.sync_gradients)
assert flags == [False, False, True] * 2, flags
w = model.weight
w.grad = None
acc.backward(w.sum() * 3)
assert torch.allclose(w.grad, torch.ones_like(w)), w.grad
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_replace_dir_never_leaves_the_folder_missing(tmp_path):
    final = tmp_path / "adapter"
    write_dir(final, lambda d: (d.mkdir(), (d / "a").write_text("1")))
    assert (final / "a").read_text() == "1"

    def fails(d):
        d.mkdir()
        (d / "a").write_text("half")
        raise OSError("interrupted")

    with pytest.raises(OSError):
        write_dir(final, fails)
    assert (final / "a").read_text() == "1"
    write_dir(final, lambda d: (d.mkdir(), (d / "b").write_text("2")))
    assert [f.name for f in final.iterdir()] == ["b"]
    assert sorted(f.name for f in tmp_path.iterdir()) == ["adapter"]
    new = tmp_path / "new"
    new.mkdir()
    replace_dir(new, tmp_path / "fresh")
    assert (tmp_path / "fresh").is_dir() and not new.exists()


def test_adapter_may_be_a_shirg_weights_file(tiny_ckpt, tmp_path):
    from shirg.errors import CheckpointError
    from shirg.model.loading import save_shirg_weights
    from shirg.train.adapter import apply_adapter

    trained = shirg.load(tiny_ckpt)
    with torch.no_grad():
        for p in trained.shirg.parameters():
            p.add_(0.5)
    weights = save_shirg_weights(trained, tmp_path / "coord.safetensors")
    expected = {k: v.clone() for k, v in trained.shirg.state_dict().items()}

    loaded = shirg.load(tiny_ckpt, adapter=weights)
    for k, v in loaded.shirg.state_dict().items():
        assert torch.equal(v, expected[k]), k
    assert not any("lora_" in n for n, _ in loaded.named_parameters())
    fresh = shirg.load(tiny_ckpt)
    assert apply_adapter(fresh, weights) is fresh
    assert all(torch.equal(v, expected[k]) for k, v in fresh.shirg.state_dict().items())

    with pytest.raises(ConfigError, match="pass one of them"):
        shirg.load(tiny_ckpt, adapter=weights, shirg_weights=weights)
    other = tmp_path / "weights.pt"
    other.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="not .safetensors"):
        apply_adapter(fresh, other)
    with pytest.raises(CheckpointError, match="does not exist"):
        apply_adapter(fresh, tmp_path / "missing")

    from shirg.cli import main

    image = tmp_path / "red.png"
    Image.fromarray(np.full((40, 40, 3), COLOURS["red"], dtype=np.uint8)).save(image)
    assert main(["answer", "--model", str(tiny_ckpt), "--adapter", str(weights), "--image", str(image),
                 "--question", "what color is the image?", "--mode", "shirg", "--resolution", "112",
                 "--gen-length", "8", "--steps", "8"]) == 0


def test_export_without_adapter_is_atomic_and_refuses_an_existing_folder(tiny_ckpt, tmp_path):
    from shirg.errors import CheckpointError
    from shirg.train.adapter import export_merged, write_lavida_checkpoint

    out = export_merged(tiny_ckpt, None, tmp_path / "merged")
    assert sorted(f.name for f in tmp_path.iterdir()) == ["merged"]
    base, merged = shirg.load(tiny_ckpt), shirg.load(out)
    for (n, a), (_, b) in zip(base.named_parameters(), merged.named_parameters(), strict=True):
        assert torch.equal(a, b), n
    with pytest.raises(CheckpointError, match="already exists"):
        export_merged(tiny_ckpt, None, out)

    sharded = write_lavida_checkpoint(base, tmp_path / "sharded", source_dir=tiny_ckpt, max_shard_bytes=2**16)
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 1 and files[0] == f"model-00001-of-{len(files):05d}.safetensors"
    total = sum(p.numel() * p.element_size() for p in base.model.state_dict().values())
    assert index["metadata"]["total_size"] == total
    reloaded = shirg.load(sharded)
    assert all(torch.equal(a, b) for a, b in zip(base.parameters(), reloaded.parameters(), strict=True))


# ----------------------------------------------------------------------------- mixed modes, checkpoints out


def test_mixed_modes_are_drawn_per_sample_and_trained(tiny_ckpt, tmp_path):
    from shirg.train.data import collate

    mix = write_toy_data(tmp_path / "data")
    cfg = tiny_config(tiny_ckpt, mix, tmp_path / "run", "data.mode=[full, lowres]", "run.max_steps=2",
                      "run.checkpoint_every=2", "trainable.components=[projector]", "lora.enabled=false")
    assert cfg.modes() == ["full", "lowres"]
    trainer = Trainer(cfg)
    trainer.setup()
    items = [trainer.dataset[(0, i)] for i in range(8)]
    drawn = [x["mode"] for x in items]
    assert set(drawn) == {"full", "lowres"}
    assert drawn == [trainer.dataset[(0, i)]["mode"] for i in range(8)]  # seeded: the same every time
    batch = collate(items)
    blocks = visual_blocks(trainer.tm.lavida, batch, "shirg", {})
    for x, block in zip(items, blocks, strict=True):
        grid = x["resolution"] // 14
        # lowres: one padded 384 view pooled to 14 x 14, plus the newline; full: every hi-res token
        assert block.shape[0] == (14 * 14 + 1 if x["mode"] == "lowres" else grid * grid)
    result = trainer.run()
    assert result["steps"] == 2 and all(np.isfinite(result["losses"]))
    assert (tmp_path / "run" / "loss.png").stat().st_size > 5_000
    with pytest.raises(ConfigError, match="unknown mode"):
        Trainer(tiny_config(tiny_ckpt, mix, tmp_path / "bad", "data.mode=[full, nope]")).setup()


def test_budgets_are_drawn_per_sample_after_the_mode_and_trained(tiny_ckpt, tmp_path):
    """data.budgets: each sample draws its K (seeded, last), its block is exactly the one selection at that
    K gives alone, `full` ignores it, and a run without budgets keeps every earlier draw."""
    from dataclasses import replace

    from shirg.model.visual import hires_visual
    from shirg.train.data import collate

    mix = write_toy_data(tmp_path / "data")
    common = ("run.max_steps=2", "run.checkpoint_every=2", "trainable.components=[projector]",
              "lora.enabled=false", "data.mode=[full, divprune]")
    cfg = tiny_config(tiny_ckpt, mix, tmp_path / "run", *common, "data.budgets=[4, 9, 20]")
    trainer = Trainer(cfg)
    trainer.setup()
    items = [trainer.dataset[(0, i)] for i in range(8)] + [trainer.dataset[(1, i)] for i in range(8)]
    assert {x["k"] for x in items} == {4, 9, 20}
    assert [x["k"] for x in items[:8]] == [trainer.dataset[(0, i)]["k"] for i in range(8)]  # seeded
    plain = Trainer(tiny_config(tiny_ckpt, mix, tmp_path / "plain", *common))
    plain.setup()
    for i in range(8):  # the same resolution and mode draws; only the budget is added
        a, b = trainer.dataset[(0, i)], plain.dataset[(0, i)]
        assert "k" not in b and (a["mode"], a["resolution"]) == (b["mode"], b["resolution"])
    batch = collate(items[:8])
    assert batch.ks == [x["k"] for x in items[:8]]
    lavida = trainer.tm.lavida
    blocks = visual_blocks(lavida, batch, "shirg", cfg.data.visual)
    sizes: set[tuple[int, int, int]] = set()
    for x, block in zip(items[:8], blocks, strict=True):
        grid = x["resolution"] // 14
        if x["mode"] == "full":
            assert block.shape[0] == grid * grid
            continue
        alone = hires_visual(lavida, [x["image"]], [x["question"]], x["mode"],
                             replace(cfg.data.visual, resolution=x["resolution"], k=x["k"]))[0]
        torch.testing.assert_close(block, alone)
        sizes.add((x["resolution"], x["k"], block.shape[0]))
    assert len({k for _, k, _ in sizes}) > 1
    for res in {r for r, _, _ in sizes}:  # K high-detail tokens plus the resolution's scaffold
        assert len({n - k for r, k, n in sizes if r == res}) == 1
    result = trainer.run()
    assert result["steps"] == 2 and all(np.isfinite(result["losses"]))
    ranged = tiny_config(tiny_ckpt, mix, tmp_path / "r", *common, "data.budgets=[3, 5-8, 20-20]").data.budgets
    assert ranged == [3, 5, 6, 7, 8, 20]  # a range is every K in it, in order: it draws as if written out
    for bad in ("data.budgets=[0]", "data.budgets=[4.5]", "data.budgets=7", "data.budgets=[8-5]",
                "data.budgets=[0-4]", "data.budgets=[4-]", "data.budgets=[a-b]"):
        with pytest.raises(ConfigError, match="data.budgets"):
            tiny_config(tiny_ckpt, mix, tmp_path / "bad", *common, bad)
    with pytest.raises(ConfigError):  # more tokens than the grid has: refused before any work
        Trainer(tiny_config(tiny_ckpt, mix, tmp_path / "big", *common, "data.budgets=[4, 100000]")).setup()


@pytest.mark.parametrize("lora", [True, False])
def test_export_from_an_intermediate_checkpoint_equals_the_final_model(tiny_ckpt, tmp_path, lora):
    from shirg.cli import main
    from shirg.errors import CheckpointError
    from shirg.train.adapter import export_merged

    mix = write_toy_data(tmp_path / "data")
    extra = ["lora.dropout=0.0"] if lora else ["lora.enabled=false", "trainable.components=[projector, coord]"]
    run = tmp_path / "run"
    trainer = run_trainer(tiny_config(tiny_ckpt, mix, run, "run.max_steps=3", "run.checkpoint_every=3", *extra))
    final = export_merged(tiny_ckpt, run / "adapter", tmp_path / "final") if lora else Path(trainer.result["model"])
    assert main(["export", "--model", str(tiny_ckpt), "--checkpoint", str(checkpoint_dirs(run)[-1]),
                 "--out", str(tmp_path / "from-ckpt")]) == 0
    a, b = shirg.load(final), shirg.load(tmp_path / "from-ckpt")
    changed = False
    base = dict(shirg.load(tiny_ckpt).named_parameters())
    for (n, x), (_, y) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        torch.testing.assert_close(y, x, rtol=0, atol=1e-6, msg=n)
        changed |= not torch.equal(x, base[n])
    assert changed
    with pytest.raises(CheckpointError, match="trainable.safetensors"):
        export_merged(tiny_ckpt, None, tmp_path / "x", checkpoint=run)


def test_two_runs_in_one_process_with_different_precisions(tiny_ckpt, tmp_path):
    # accelerate keeps one state per process; a second run in another precision must still train
    from shirg.train.trainer import train

    mix = write_toy_data(tmp_path / "data")
    losses = {}
    for mp in ("no", "bf16", "no"):
        cfg = tiny_config(tiny_ckpt, mix, tmp_path / f"run-{mp}-{len(losses)}", "run.max_steps=1",
                          f"run.mixed_precision={mp}", "trainable.components=[projector]", "lora.enabled=false")
        losses[len(losses)] = train(cfg)["losses"]
    assert all(np.isfinite(v).all() for v in losses.values())
    assert losses[0] == losses[2]  # the float32 run is unchanged by the bf16 run between


def test_every_configured_objective_has_one_object():
    from shirg.train.config import OBJECTIVES as NAMES
    from shirg.train.objectives import OBJECTIVES, AnswerObjective, PatchLabelObjective
    from shirg.train.patch_labels import collate_patches

    assert set(OBJECTIVES) == set(NAMES)
    assert OBJECTIVES["answer"] is AnswerObjective and OBJECTIVES["patch_labels"] is PatchLabelObjective
    assert PatchLabelObjective().collate is collate_patches
