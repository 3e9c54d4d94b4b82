"""What a model or adapter folder may ask of us: data only, never code.

A checkpoint folder is untrusted input. We read its numbers (config.json), its tensors (safetensors
only, never pickles) and its tokenizer (through transformers with ``trust_remote_code=False``).
transformers can be told by a folder to import Python shipped inside it (``auto_map`` naming a
``module.Class``); with ``trust_remote_code=False`` it refuses, but we look first so the refusal is
a clear one-line error and transformers is never asked (it never prompts "run the custom code?").

config.json's ``auto_map`` for the *model* classes (LLaDA's own checkpoints carry one) is harmless
to us: the model is built by this package from the numbers alone. What transformers would follow
on our path is refused:

- any ``auto_map`` in tokenizer_config.json;
- an ``AutoTokenizer`` entry in config.json's ``auto_map``;
- any ``auto_map`` in config.json when tokenizer_config.json names no ``tokenizer_class`` (then
  transformers would build the folder's config class to find the tokenizer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shirg.errors import CheckpointError
from shirg.limits import read_json_file

TRUST_REMOTE_CODE = False  # passed to every from_pretrained-style call; never True
TOKENIZER_CONFIG = "tokenizer_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def _auto_map(data: dict[str, Any]) -> dict:
    value = data.get("auto_map")
    if value in (None, {}, []):
        return {}
    return value if isinstance(value, dict) else {"?": value}


def check_no_remote_code(folder: str | Path) -> None:
    """CheckpointError when loading the tokenizer in ``folder`` would need code shipped in it."""
    folder = Path(folder)
    tok_cfg: dict = {}
    if (folder / TOKENIZER_CONFIG).is_file():
        tok_cfg = read_json_file(folder / TOKENIZER_CONFIG)
        custom = _auto_map(tok_cfg)
        if custom:
            raise CheckpointError(
                f"{folder / TOKENIZER_CONFIG} asks to run Python code shipped in the folder (auto_map "
                f"{_describe(custom)}); shirg never runs code from a model folder: use a tokenizer that "
                "transformers provides (remove auto_map)")
    if (folder / "config.json").is_file():
        model_cfg = read_json_file(folder / "config.json")
        custom = _auto_map(model_cfg)
        if "AutoTokenizer" in custom or (custom and not tok_cfg.get("tokenizer_class")):
            raise CheckpointError(
                f"{folder / 'config.json'} would make transformers run Python code shipped in the folder to "
                f"find the tokenizer (auto_map {_describe(custom)}); shirg never runs code from a model "
                f"folder: name a built-in tokenizer_class in {TOKENIZER_CONFIG}")


def _describe(auto_map: dict) -> str:
    items = [f"{k}: {v}" for k, v in list(auto_map.items())[:3]]
    return "{" + ", ".join(str(i) for i in items) + (", ..." if len(auto_map) > 3 else "") + "}"


def check_adapter_folder(folder: str | Path) -> None:
    """A PEFT adapter folder must hold its LoRA weights as safetensors (PEFT would otherwise unpickle
    ``adapter_model.bin``) and a JSON-object adapter_config.json."""
    folder = Path(folder)
    read_json_file(folder / "adapter_config.json")
    if not (folder / ADAPTER_WEIGHTS).is_file():
        others = sorted(p.name for p in folder.glob("adapter_model.*"))
        found = f" (found {', '.join(others)}: pickled weights are never loaded)" if others else ""
        raise CheckpointError(f"{folder} has no {ADAPTER_WEIGHTS}{found}; only safetensors adapters are loaded")
