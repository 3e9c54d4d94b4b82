"""The bundled small SHIRG-LaViDa: its files, `shirg demo`, and the shipped training recipe.

The recipe tests rebuild the init from configs/small/model.yaml, regenerate the exact training
samples the first optimizer steps draw (EntityGrid is deterministic per (seed, index)) and check
that `shirg train` with the shipped configs reproduces the first losses logged by the real runs
(stage 0 from the make-tiny init, the bundled adapter's run from the bundled model; the other stages
start from weights that are not shipped).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import shirg
from shirg import bundled
from shirg.cli import main
from shirg.train.config import load_config
from shirg.train.data import epoch_order

REPO = Path(__file__).resolve().parents[2]
SMALL = REPO / "configs" / "small"
FIRST_STEPS = 2
# the first losses the real runs logged (metrics.jsonl, steps 1-2), with the data of configs/small/recipe.sh:
# stage 0 from the make-tiny init; the shipped adapter's run (configs/evidence/head_box_lora.yaml on the
# bundled model, in float32, whose CPU kernels do not depend on the instruction set beyond 1e-5)
REFERENCE_LOSSES = {"stage0": [2.183593988418579, 2.1488420963287354],
                    "adapter": [4.38433837890625, 5.255007266998291]}
# configs/small/recipe.sh's stage-0 / stage-1a sets, in stage0.yaml's order:
# (folder, seed, n, generator changes over the small preset)
TRAIN_SETS = [
    ("train1x2", 11, 6000, {"rows": 1, "cols": 2, "occupancy": 1.0}),
    ("train2x2", 12, 8000, {"rows": 2, "cols": 2}),
    ("train", 1, 24000, {}),
]
RECIPE_G = "--preset small --label-place inside --label-grid 14 --label-jitter 2"


def test_bundled_files_load_in_lavida_layout():
    from safetensors import safe_open

    from shirg.commands.make_tiny import load_model_spec
    from shirg.testing import expected_lavida_keys, tiny_lavida_config

    model_dir, adapter_dir = bundled.model_dir(), bundled.adapter_dir()
    size = sum(f.stat().st_size for f in bundled.ROOT.rglob("*") if f.is_file())
    assert size <= 20 * 2**20, f"bundled files take {size / 2**20:.1f} MiB"
    spec = load_model_spec(str(SMALL / "model.yaml"))  # the init of the shipped recipe
    expected = expected_lavida_keys(tiny_lavida_config(**spec["config"]))
    with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 - safe_open has no iter
    assert shapes == expected
    config = json.loads((model_dir / "config.json").read_text())
    assert config["shirg_resolution"] == 336 and config["vision_config"]["image_size"] == 168
    assert (adapter_dir / "adapter_config.json").is_file() and (adapter_dir / "shirg_weights.safetensors").is_file()
    base = shirg.load(model_dir)
    adapted = shirg.load(model_dir, adapter=adapter_dir)
    lora = [n for n, _ in adapted.named_parameters() if "lora_" in n]
    assert lora and all("mm_projector" in n or "vision_tower" in n for n in lora)
    # the adapter changes the tower but the stage-1 weights underneath are the same tensors
    assert torch.equal(base.model.transformer.wte.weight, adapted.model.transformer.wte.weight)
    assert adapted.shirg["coord_embed"].coord_out.weight.abs().sum() > 0  # trained, not the zero init


def test_demo_answers_in_three_modes(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for mode in ("lowres", "full", "shirg"):
        assert f"[{mode:>6}]" in text
    assert "vision" in text and "denoise" in text  # per-stage times
    record = json.loads((out / "demo.json").read_text())
    tokens = {m["mode"]: m["visual_tokens"] for m in record["modes"]}
    assert tokens == {"lowres": 145, "full": 576, "shirg": tokens["shirg"]} and tokens["shirg"] <= 36 + 192
    assert (out / "overlay.png").stat().st_size > 10_000


def test_demo_bad_input(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--modes", "nope"]) == 2
    assert "unknown mode" in capsys.readouterr().err
    assert main(["demo", "--out", str(tmp_path), "--image", str(bundled.demo_sample().image)]) == 2
    assert "--question" in capsys.readouterr().err


def test_recipe_generates_the_data_the_tests_assume():
    recipe = (SMALL / "recipe.sh").read_text()
    assert f'G="{RECIPE_G}"' in recipe
    stage0 = load_config(SMALL / "stage0.yaml")
    mixture = (REPO / load_config(SMALL / "stage1a.yaml").data.mixture).read_text()
    for folder, seed, n, changes in TRAIN_SETS:
        grid = f"--grid {changes['rows']}x{changes['cols']} " if changes else ""
        occupancy = f"--occupancy {changes['occupancy']} " if "occupancy" in changes else ""
        command = (f"shirg entitygrid $G {grid}{occupancy}--seed {seed} --n {n} --captions --cells 2 "
                   f"--out runs/small/data/{folder}")
        assert command in recipe
        assert f"runs/small/data/{folder}" in stage0.data.entitygrid
        if folder != "train":  # stage 1a reads the two easy sets
            assert f"runs/small/data/{folder}/llava_train.json" in mixture


def test_every_small_training_config_and_mixture_parses():
    """Every stage and probe config under configs/small loads, and its mixture names sources whose
    records live under runs/small (what the recipes' `shirg entitygrid` commands write)."""
    import yaml

    configs = [p for p in SMALL.rglob("*.yaml") if not p.name.startswith(("mixture", "model"))]
    assert len(configs) >= 7
    for path in configs:
        cfg = load_config(path)
        if cfg.data.objective == "patch_labels":  # stage 0 reads EntityGrid folders, not a mixture
            assert cfg.data.entitygrid
            assert all((REPO / f).resolve().is_relative_to(REPO / "runs" / "small") for f in cfg.data.entitygrid)
            continue
        mixture = REPO / cfg.data.mixture
        sources = yaml.safe_load(mixture.read_text())["sources"]
        assert sources, mixture
        for src in sources:
            resolved = (mixture.parent / src["json"]).resolve()
            assert resolved.is_relative_to(REPO / "runs" / "small"), (path, src)


def test_stage0_config_reproduces_first_losses(tmp_path):
    """Stage 0 (the tower alone on per-patch labels, configs/small/stage0.yaml): its three EntityGrid
    folders rebuilt with every record and only the images the first steps draw."""
    from dataclasses import asdict

    from shirg.entitygrid import generate_sample, preset_config
    from shirg.train.trainer import train

    stage = "stage0"
    cfg = load_config(SMALL / f"{stage}.yaml")
    # the folders the recipe writes, in TRAIN_SETS' order (test_recipe_generates_the_data_the_tests_assume)
    assert cfg.data.entitygrid == [f"runs/small/data/{f}" for f, *_ in TRAIN_SETS]
    sets, n_total = [], 0
    for folder, seed, n, changes in TRAIN_SETS:
        gen = preset_config("small", label_place="inside", label_grid=14, label_jitter=2, **changes)
        records = [{"image": f"images/{rec['id']}.png", **rec} for rec in (generate_sample(gen, seed, i)[1]
                                                                            for i in range(n))]
        root = tmp_path / folder
        (root / "images").mkdir(parents=True)
        (root / "questions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        (root / "entitygrid.json").write_text(json.dumps({"config": asdict(gen), "seed": seed, "n": n}))
        sets.append((root, gen, seed, n_total, n))
        n_total += n
    for i in epoch_order(n_total, cfg.run.seed, 0)[: FIRST_STEPS * cfg.run.batch_size]:
        root, gen, seed, start, n = next(s for s in sets if s[3] <= i < s[3] + s[4])
        img, rec = generate_sample(gen, seed, i - start)
        img.save(root / "images" / f"{rec['id']}.png")
    init = tmp_path / "init"
    assert main(["make-tiny", "--config", str(SMALL / "model.yaml"), "--out", str(init)]) == 0
    cfg = load_config(SMALL / f"{stage}.yaml", [f"model.path={init}", f"run.output_dir={tmp_path / 'run'}",
                                                 f"data.entitygrid=[{', '.join(str(s[0]) for s in sets)}]"])
    result = train(cfg, stop_after=FIRST_STEPS)
    assert result["losses"] == pytest.approx(REFERENCE_LOSSES[stage], rel=2e-3, abs=2e-3)


def _recipe_sets(recipe_path: Path = SMALL / "recipe.sh") -> dict[str, tuple[int, int, dict, list[str] | None]]:
    """A recipe's `shirg entitygrid $G` lines (configs/small/recipe.sh by default): folder -> (seed, n,
    generator changes over the small preset, question types)."""
    import shlex

    recipe = recipe_path.read_text()
    assert f'G="{RECIPE_G}"' in recipe
    sets = {}
    for line in recipe.splitlines():
        if not line.startswith("shirg entitygrid $G "):
            continue
        args, opts = shlex.split(line)[3:], {}
        while args:
            key = args.pop(0)
            opts[key] = args.pop(0) if args and not args[0].startswith("--") else True
        changes = {"label_place": "inside", "label_grid": 14, "label_jitter": 2}
        if "--grid" in opts:
            changes["rows"], changes["cols"] = map(int, opts["--grid"].split("x"))
        if "--occupancy" in opts:
            changes["occupancy"] = float(opts["--occupancy"])
        types = opts["--types"].split(",") if "--types" in opts else None
        sets[Path(opts["--out"]).name] = (int(opts["--seed"]), int(opts["--n"]), changes, types)
    return sets


def test_mixtures_read_what_the_recipe_writes():
    import yaml

    sets = _recipe_sets()
    assert sets["eval"][:2] == (2026, 500)  # the held-out evaluation seed, never a training seed
    train_seeds = set()
    for stage in ("stage1r_single", "stage1r_grid", "stage1c", "stage2"):
        cfg = load_config(SMALL / f"{stage}.yaml")
        mixture = REPO / cfg.data.mixture
        for src in yaml.safe_load(mixture.read_text())["sources"]:
            folder = (mixture.parent / src["json"]).resolve().parent
            assert folder.parent == (REPO / "runs" / "small" / "data").resolve(), (stage, src)
            assert folder.name in sets, (stage, folder.name)
            train_seeds.add(sets[folder.name][0])
    assert 2026 not in train_seeds and len(train_seeds) == 4


def test_shipped_adapter_reproduces_first_losses(tmp_path):
    """The bundled adapter's run (configs/evidence/head_box_lora.yaml from the bundled model, recipe step 17 of
    configs/evidence/recipe.sh): its mixture rebuilt from the recipe's generator line (every record, only the
    images the first steps draw), then the first logged losses of the real run."""
    import yaml

    from shirg.entitygrid import generate_sample, preset_config, training_records
    from shirg.train.data import load_mixture
    from shirg.train.trainer import train

    config = REPO / "configs" / "evidence" / "head_box_lora.yaml"
    cfg = load_config(config)
    sets = _recipe_sets(REPO / "configs" / "evidence" / "recipe.sh")
    mixture = REPO / cfg.data.mixture
    sources, gens = [], {}  # gens: folder -> its generator config
    for src in yaml.safe_load(mixture.read_text())["sources"]:
        folder = Path(src["json"]).parent.name
        seed, n, changes, types = sets[folder]
        gen = gens[folder] = preset_config("small", **changes)
        records = [{"image": f"images/{rec['id']}.png", **rec}
                   for rec in (generate_sample(gen, seed, i, types)[1] for i in range(n))]
        root = tmp_path / folder
        (root / "images").mkdir(parents=True)
        (root / "llava_train.json").write_text(json.dumps(training_records(records)))
        sources.append({**src, "json": str(root / "llava_train.json"), "image_root": str(root)})
    rebuilt = tmp_path / "mixture.yaml"
    rebuilt.write_text(yaml.safe_dump({"sources": sources}))
    samples = load_mixture(rebuilt, seed=cfg.run.seed)
    for i in epoch_order(len(samples), cfg.run.seed, 0)[: FIRST_STEPS * cfg.run.batch_size]:
        path = Path(samples[i].image)
        folder = path.parent.parent.name
        seed, _, _, types = sets[folder]
        img, rec = generate_sample(gens[folder], seed, int(path.stem.split("-")[1]), types)
        assert rec["id"] == path.stem
        img.save(path)
    common = [f"model.path={bundled.model_dir()}", f"data.mixture={rebuilt}", "run.log_every=1"]
    cfg = load_config(config, [*common, f"run.output_dir={tmp_path / 'run'}"])
    assert cfg.run.mixed_precision == "no" and cfg.data.relevance.target == "box"
    result = train(cfg, stop_after=FIRST_STEPS)
    assert result["losses"] == pytest.approx(REFERENCE_LOSSES["adapter"], rel=1e-4, abs=1e-4)


def test_recipe_ships_what_its_last_runs_write():
    """configs/small/recipe.sh copies into the package the model host_colour_mixed.yaml writes and the adapter of
    the head_box_lora.yaml run it starts on that model, each after the run that writes it; the run before starts
    from the first bundled model the stages write."""
    recipe = (SMALL / "recipe.sh").read_text()
    evidence = REPO / "configs" / "evidence"
    mixed = load_config(evidence / "host_colour_mixed.yaml")
    colour = load_config(evidence / "host_colour.yaml")
    first = load_config(SMALL / "stage1c.yaml").run.output_dir + "/model"
    assert colour.model.path == "runs/small/stage1c/model" == first
    assert mixed.model.path == "runs/colour/host-1500" and "--out runs/colour/host-1500" in recipe
    adapter_run = ("shirg train --config configs/evidence/head_box_lora.yaml --model runs/colour15/host/model \\\n"
                   "  --output-dir runs/colour17/adapter-run")
    ship_model = f"cp -r {mixed.run.output_dir}/model src/shirg/assets/small/model"
    ship_adapter = "cp -r runs/colour17/adapter-run/adapter src/shirg/assets/small/adapter"
    steps = ("configs/small/stage2.yaml", "configs/evidence/host_colour.yaml",
             "configs/evidence/host_colour_mixed.yaml", adapter_run, ship_model, ship_adapter)
    order = [recipe.index(s) for s in steps]
    assert order == sorted(order)
