"""`shirg make-tiny`: write a random-weight LaViDa checkpoint (exact key layout, sharded, tokenizer).

Without ``--config`` it is the test suite's tiny checkpoint. ``--config FILE.yaml`` sets the sizes
(``config``: LaViDa config.json keys over the tiny defaults), the tokenizer's whole-word pieces
(``tokenizer_words``; ``tokenizer_bare_words`` are also whole without a leading space), the seed,
the tower's position-table init (``vision_position``: normal or sincos), the LM / projector linear
init (``linear_init``: normal or fan_in) and whether the tower's patch and position embeddings
start centred (``vision_centre``: false or true): configs/small/model.yaml is the bundled small
model's init.
"""

from __future__ import annotations

import argparse

from shirg.errors import ConfigError
from shirg.io import write_dir
from shirg.limits import positive_int, seed_int

HELP = "write a random-weight checkpoint in LaViDa's exact layout (tiny, or sizes from a YAML: a training init)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="folder to write")
    p.add_argument("--config", default=None, help="model YAML (config, tokenizer_words, seed), e.g. "
                                                  "configs/small/model.yaml")
    p.add_argument("--seed", type=seed_int, default=None, help="weight seed (default: the YAML's, else 0)")
    p.add_argument("--shards", type=positive_int, default=None,
                   help="safetensors shards (default: 1 with --config, else 2)")
    p.add_argument("--force", action="store_true",
                   help="replace a non-empty --out folder (the whole folder: no old file survives)")


def load_model_spec(path: str) -> dict:
    from pathlib import Path

    import yaml

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"model config {file} does not exist")
    try:
        spec = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{file} is not valid YAML: {' '.join(str(e).split())}") from e
    if not isinstance(spec, dict):
        raise ConfigError(f"{file} must be a mapping (config, tokenizer_words, seed, ...), got {type(spec).__name__}")
    unknown = sorted(set(spec) - {"config", "tokenizer_words", "seed", "vision_position", "linear_init",
                                 "vision_centre", "tokenizer_bare_words"})
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {file}; valid: config, tokenizer_words, seed, "
                          "vision_position, linear_init, vision_centre, tokenizer_bare_words")
    if not isinstance(spec.get("vision_centre", False), bool):
        raise ConfigError(f"{file}: vision_centre must be true or false")
    for key in ("tokenizer_words", "tokenizer_bare_words"):
        words = spec.get(key, [])
        if not isinstance(words, list) or not all(isinstance(w, str) and w for w in words):
            raise ConfigError(f"{file}: {key} must be a list of words")
    if not isinstance(spec.get("config", {}), dict):
        raise ConfigError(f"{file}: config must be a mapping of LaViDa config.json keys")
    return spec


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from shirg.testing import tiny_lavida_config, write_tiny_lavida_checkpoint

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise ConfigError(f"--out {out} is not empty; choose a new folder, or pass --force to replace it whole")
    spec = load_model_spec(args.config) if args.config else {}
    config = tiny_lavida_config(**spec.get("config", {}))
    seed = args.seed if args.seed is not None else int(spec.get("seed", 0))
    shards = args.shards or (1 if args.config else 2)
    # written next to --out and swapped in: complete or absent, never old and new files mixed
    path = write_dir(out, lambda d: write_tiny_lavida_checkpoint(d, config=config, seed=seed, shards=shards,
                                        tokenizer_words=spec.get("tokenizer_words", ()),
                                        vision_position=spec.get("vision_position", "normal"),
                                        linear_init=spec.get("linear_init", "normal"),
                                        vision_centre=spec.get("vision_centre", False),
                                        tokenizer_bare_words=spec.get("tokenizer_bare_words", ())))
    print(f"random-weight LaViDa checkpoint written to {path} (answers are meaningless until it is trained)")
    return 0
