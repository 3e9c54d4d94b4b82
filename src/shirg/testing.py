"""Tiny random LaViDa checkpoints in the real layout, for tests and for trying shirg without weights.

:func:`write_tiny_lavida_checkpoint` writes ``config.json``, (sharded) safetensors with exactly
LaViDa's key names (``model.transformer.*``, ``model.vision_tower.vision_tower.vision_model.*``,
``model.mm_projector.*``, ``model.image_newline``) and a tiny byte-level tokenizer with LLaDA's
special tokens and a Llama-3 style chat template. Widths are tiny; the token geometry is real
(384 px views, patch 14 -> 27 x 27 tokens per view).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from shirg.checkpoint import write_safetensors_folder
from shirg.errors import ConfigError
from shirg.model.anyres import DEFAULT_PINPOINTS
from shirg.model.prompt import SYSTEM_PROMPT

# Ordinary (byte-level BPE) tokens come first, LLaDA's special tokens after them, as in LLaDA.
TINY_BASE_VOCAB = 400
TINY_SPECIAL_TOKENS = (
    "<|begin_of_text|>",
    "<|endoftext|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|mdm_mask|>",
)
VISION_PREFIX = "model.vision_tower.vision_tower.vision_model."
_SPECIAL_ID = {tok: TINY_BASE_VOCAB + i for i, tok in enumerate(TINY_SPECIAL_TOKENS)}

# Llama-3 style: BOS once, every turn as header + "\n\n" + trimmed content + <|eot_id|>.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim"
    " + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

_CORPUS_WORDS = (
    "the a an of to in on at for with by from and or not is are was were be what which who where when "
    "how many much does do this that these those image picture chart table figure document page text "
    "value values year years total number percent answer question title label axis left right top "
    "bottom color red blue green black white yes no system user assistant shown show highest lowest "
    "average difference between name date price"
).split()


def tiny_lavida_config(**overrides: Any) -> dict[str, Any]:
    """A LaViDa ``config.json`` dict with tiny widths (vision 32, LLM 64, 2 layers each).

    Keys given in ``overrides`` replace the defaults (a ``vision_config`` dict is merged key by key).
    """
    config: dict[str, Any] = {
        "mm_vision_tower": "google/siglip-so400m-patch14-384",
        "mm_projector_type": "mlp2x_gelu",
        "mm_hidden_size": 32,
        "mm_patch_merge_type": "spatial_unpad",
        "image_aspect_ratio": "anyres",
        "image_grid_pinpoints": [list(p) for p in DEFAULT_PINPOINTS],
        "mm_spatial_pool_mode": "bilinear",
        "d_model": 64,
        "n_layers": 2,
        "n_heads": 4,
        "n_kv_heads": 4,
        "mlp_hidden_size": 128,
        "rope_theta": 500000.0,
        "rms_norm_eps": 1e-5,
        "vocab_size": 512,
        "embedding_size": 512,
        "mask_token_id": _SPECIAL_ID["<|mdm_mask|>"],
        "eos_token_id": _SPECIAL_ID["<|endoftext|>"],
        "pad_token_id": _SPECIAL_ID["<|endoftext|>"],
        "eot_token_id": _SPECIAL_ID["<|eot_id|>"],
        "image_newline": True,
        "vision_config": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,  # layers that REMAIN (LaViDa keeps 26 of so400m's 27)
            "num_attention_heads": 2,
            "num_channels": 3,
            "image_size": 384,
            "patch_size": 14,
            "layer_norm_eps": 1e-6,
            "hidden_act": "gelu_pytorch_tanh",
        },
    }
    overrides = copy.deepcopy(overrides)
    vision_overrides = overrides.pop("vision_config", None) or {}
    config.update(overrides)
    config["vision_config"].update(vision_overrides)
    if config["mm_hidden_size"] != config["vision_config"]["hidden_size"]:
        raise ConfigError(
            f"mm_hidden_size {config['mm_hidden_size']} must equal vision_config.hidden_size "
            f"{config['vision_config']['hidden_size']}; override both together"
        )
    return config


def build_tiny_tokenizer(out_dir: str | Path, words: Sequence[str] = (), bare_words: Sequence[str] = ()) -> Path:
    """Train and save a tiny byte-level BPE tokenizer (400 pieces + LLaDA's special tokens).

    ``words`` are weighted so that each becomes one piece after a space (" red"), e.g. a task's
    vocabulary; with none the tokenizer is the same as it always was. ``bare_words`` also become one
    piece with no space before them: the first word of an answer follows the assistant header's
    newlines, so without this "purple" at an answer's start is spelt "p" + "urple" and a
    parallel-decoding model can mix the pieces of two colours. A word that still splits raises.

    Writes ``tokenizer.json`` and ``tokenizer_config.json`` (with the chat template) into
    ``out_dir``; ``transformers.AutoTokenizer.from_pretrained(out_dir)`` loads it offline.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_BASE_VOCAB,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [SYSTEM_PROMPT, " ".join(_CORPUS_WORDS), " ".join(str(i) for i in range(100))]
    corpus += [f"{w} {w.capitalize()} {w.upper()}" for w in _CORPUS_WORDS]
    corpus *= 4
    corpus += [f"{w} " * 50 for w in words]  # frequent enough to be merged before everything else
    corpus += [w for w in bare_words for _ in range(60)]  # each entry is one bare occurrence
    tok.train_from_iterator(corpus, trainer=trainer)
    split = [w for w in bare_words if len(tok.encode(w).ids) != 1 or len(tok.encode(" " + w).ids) != 1]
    if split:
        raise ConfigError(f"the tiny tokenizer has no single piece for {split} (with and without a leading "
                          f"space): its {TINY_BASE_VOCAB} pieces are used up; list fewer bare words")
    if tok.get_vocab_size() != TINY_BASE_VOCAB:
        raise RuntimeError(
            f"tiny tokenizer trained to {tok.get_vocab_size()} pieces, expected {TINY_BASE_VOCAB}"
        )
    tok.add_special_tokens(list(TINY_SPECIAL_TOKENS))
    for name, expected in _SPECIAL_ID.items():
        assert tok.token_to_id(name) == expected, (name, tok.token_to_id(name), expected)
    tok.save(str(out / "tokenizer.json"))
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "additional_special_tokens": [
            "<|mdm_mask|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"
        ],
        "model_max_length": 4096,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    return out


def expected_lavida_keys(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every tensor name of a LaViDa checkpoint with this config, mapped to its shape."""
    from transformers import SiglipVisionConfig, SiglipVisionModel

    d, ff, vocab = config["d_model"], config["mlp_hidden_size"], config["embedding_size"]
    kv = d // config["n_heads"] * config["n_kv_heads"]
    keys: dict[str, tuple[int, ...]] = {"model.transformer.wte.weight": (vocab, d)}
    for i in range(config["n_layers"]):
        p = f"model.transformer.blocks.{i}."
        keys |= {
            p + "attn_norm.weight": (d,),
            p + "ff_norm.weight": (d,),
            p + "q_proj.weight": (d, d),
            p + "k_proj.weight": (kv, d),
            p + "v_proj.weight": (kv, d),
            p + "attn_out.weight": (d, d),
            p + "ff_proj.weight": (ff, d),
            p + "up_proj.weight": (ff, d),
            p + "ff_out.weight": (d, ff),
        }
    keys["model.transformer.ln_f.weight"] = (d,)
    keys["model.transformer.ff_out.weight"] = (vocab, d)

    with torch.device("meta"):
        vision = SiglipVisionModel(SiglipVisionConfig(**config["vision_config"], vision_use_head=False))
    # transformers 5 keeps SiglipVisionModel flat (base_model_prefix "vision_model"); older
    # versions nest it under ``vision_model.``. LaViDa's checkpoint always spells the prefix out.
    for name, tensor in vision.state_dict().items():
        keys[VISION_PREFIX + name.removeprefix("vision_model.")] = tuple(tensor.shape)

    mm = config["mm_hidden_size"]
    keys |= {
        "model.mm_projector.0.weight": (d, mm),
        "model.mm_projector.0.bias": (d,),
        "model.mm_projector.2.weight": (d, d),
        "model.mm_projector.2.bias": (d,),
        "model.image_newline": (d,),
    }
    return keys


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """MAE's fixed 2-D sine-cosine position table [grid * grid, dim] (row-major; dim % 4 == 0)."""
    if dim % 4:
        raise ConfigError(f"a 2-D sine-cosine table needs a width divisible by 4, got {dim}")
    freq = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64),
                            indexing="ij")
    parts = []
    for coord in (ys.reshape(-1), xs.reshape(-1)):
        angle = coord[:, None] * freq[None]
        parts += [angle.sin(), angle.cos()]
    return torch.cat(parts, dim=1).float()


def _is_fan_in_linear(name: str, shape) -> bool:
    """A linear weight of the language model or the projector (not the token embedding)."""
    return (len(shape) == 2 and name.endswith(".weight") and "vision_tower" not in name
            and not name.endswith("wte.weight") and not _is_norm(name))


def _is_norm(name: str) -> bool:
    return any(part in name for part in ("norm.", "layer_norm", "ln_f", "layernorm"))


def write_tiny_lavida_checkpoint(out_dir: str | Path, config: dict[str, Any] | None = None, seed: int = 0,
                                 shards: int = 2, dtype: torch.dtype = torch.float32,
                                 tokenizer_words: Sequence[str] = (), vision_position: str = "normal",
                                 linear_init: str = "normal", vision_centre: bool = False,
                                 tokenizer_bare_words: Sequence[str] = ()) -> Path:
    """Write a random LaViDa checkpoint (config, safetensors, tokenizer) into ``out_dir``.

    Weights ~ N(0, 0.02), norm weights 1 and norm biases 0; deterministic from ``seed`` (the same
    values for every ``dtype``). ``vision_position="sincos"`` starts the tower's learned position
    table from the fixed 2-D sine-cosine table of MAE instead (a from-scratch tower then sees where
    each patch lies from step one). ``linear_init="fan_in"`` draws the language model's and the
    projector's linear weights (token embeddings aside) from N(0, 1 / fan_in) instead: at small widths
    N(0, 0.02) leaves attention uniform for hundreds of steps and a model trained from scratch
    learns the answer prior long before it learns to look at the image or copy from the prompt.
    ``vision_centre=True`` centres what the tower adds to every patch: each patch-embedding filter sums
    to zero with a zero bias (a uniform white patch, most of an EntityGrid image, embeds to zero) and
    the position table has zero mean over positions. Without it the embeddings share one large
    vector, the visual tokens differ by a few percent of their norm, and a from-scratch model
    trained on EntityGrid grew that shared part and never used the image.
    ``tokenizer_words`` / ``tokenizer_bare_words``: see :func:`build_tiny_tokenizer`.
    ``shards > 1`` writes ``model-0000k-of-0000n.safetensors`` plus ``model.safetensors.index.json``;
    ``shards == 1`` writes a single ``model.safetensors``.
    """
    if shards < 1:
        raise ConfigError(f"shards must be >= 1, got {shards}")
    if vision_position not in ("normal", "sincos"):
        raise ConfigError(f"vision_position must be 'normal' or 'sincos', got {vision_position!r}")
    if linear_init not in ("normal", "fan_in"):
        raise ConfigError(f"linear_init must be 'normal' or 'fan_in', got {linear_init!r}")
    config = tiny_lavida_config() if config is None else copy.deepcopy(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config["torch_dtype"] = str(dtype).removeprefix("torch.")

    gen = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for name, shape in expected_lavida_keys(config).items():
        if _is_norm(name):
            t = torch.ones(shape) if name.endswith("weight") else torch.zeros(shape)
        else:
            t = torch.randn(shape, generator=gen) * 0.02
        if linear_init == "fan_in" and _is_fan_in_linear(name, shape):
            t = t * (1.0 / (shape[1] ** 0.5) / 0.02)
        if vision_position == "sincos" and name.endswith("embeddings.position_embedding.weight"):
            t = sincos_2d(int(round(shape[0] ** 0.5)), shape[1])
        if vision_centre and name.endswith("embeddings.position_embedding.weight"):
            t = t - t.mean(0, keepdim=True)
        if vision_centre and name.endswith("embeddings.patch_embedding.weight"):
            t = t - t.mean(dim=(1, 2, 3), keepdim=True)
        if vision_centre and name.endswith("embeddings.patch_embedding.bias"):
            t = torch.zeros(shape)
        tensors[name] = t.to(dtype).contiguous()

    write_safetensors_folder(out, tensors, shards)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    build_tiny_tokenizer(out, tokenizer_words, tokenizer_bare_words)
    return out


def write_png_bomb(path: str | Path, width: int, height: int) -> Path:
    """A valid 8-bit grey PNG of ``width`` x ``height`` zeros: a small file (about 1 KB per megapixel)
    that decodes to ``width * height`` bytes, for testing the pixel limit."""
    import zlib

    comp = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    data = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return len(body).to_bytes(4, "big") + kind + body + crc.to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    path = Path(path)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path
