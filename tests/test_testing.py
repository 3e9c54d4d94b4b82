import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from shirg.testing import expected_lavida_keys, tiny_lavida_config, write_tiny_lavida_checkpoint

FACT_FIELDS = [
    "mm_vision_tower", "mm_projector_type", "mm_hidden_size", "mm_patch_merge_type", "image_aspect_ratio",
    "image_grid_pinpoints", "mm_spatial_pool_mode", "d_model", "n_layers", "n_heads", "n_kv_heads",
    "mlp_hidden_size", "rope_theta", "rms_norm_eps", "vocab_size", "embedding_size", "mask_token_id",
    "eos_token_id",
]


def _load_all(folder):
    tensors = {}
    for f in sorted(folder.glob("*.safetensors")):
        tensors |= load_file(str(f))
    return tensors


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_tiny_lavida_checkpoint(tmp_path_factory.mktemp("ck"), seed=0)


def test_config_fields(ckpt):
    cfg = json.loads((ckpt / "config.json").read_text())
    assert all(k in cfg for k in FACT_FIELDS)
    assert cfg["mm_projector_type"] == "mlp2x_gelu" and cfg["mm_patch_merge_type"] == "spatial_unpad"
    assert cfg["image_aspect_ratio"] == "anyres" and cfg["mm_spatial_pool_mode"] == "bilinear"
    v = cfg["vision_config"]
    assert (v["image_size"], v["patch_size"], v["num_hidden_layers"]) == (384, 14, 2)
    assert v["hidden_size"] == cfg["mm_hidden_size"]


def test_files_and_index(ckpt):
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert all((ckpt / n).is_file() for n in names)
    assert not (ckpt / "model.safetensors").exists()
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    expected = expected_lavida_keys(tiny_lavida_config())
    assert set(index["weight_map"]) == set(expected)
    assert set(index["weight_map"].values()) == set(names)
    for name in names:  # the index tells the truth about where each tensor lives
        in_file = set(load_file(str(ckpt / name)))
        assert in_file == {k for k, f in index["weight_map"].items() if f == name}
    tensors = _load_all(ckpt)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in tensors.values())


def test_keys_and_shapes_match_lavida_layout(ckpt):
    cfg = tiny_lavida_config()
    tensors = _load_all(ckpt)
    expected = expected_lavida_keys(cfg)
    assert {k: tuple(t.shape) for k, t in tensors.items()} == expected
    d = cfg["d_model"]
    assert expected["model.transformer.wte.weight"] == (cfg["embedding_size"], d)
    assert expected["model.transformer.blocks.1.ff_out.weight"] == (d, cfg["mlp_hidden_size"])
    assert expected["model.transformer.ff_out.weight"] == (cfg["embedding_size"], d)
    assert expected["model.image_newline"] == (d,)
    assert expected["model.mm_projector.0.weight"] == (d, cfg["mm_hidden_size"])
    vp = "model.vision_tower.vision_tower.vision_model."
    assert expected[vp + "embeddings.position_embedding.weight"] == (27 * 27, 32)
    assert expected[vp + "embeddings.patch_embedding.weight"] == (32, 3, 14, 14)
    assert vp + "encoder.layers.1.mlp.fc2.bias" in expected
    assert vp + "encoder.layers.2.mlp.fc2.bias" not in expected
    assert vp + "post_layernorm.weight" in expected and not any("head" in k for k in expected)
    assert torch.equal(tensors["model.transformer.ln_f.weight"], torch.ones(d))
    assert torch.equal(tensors[vp + "encoder.layers.0.layer_norm1.bias"], torch.zeros(32))
    assert 0.01 < tensors["model.transformer.wte.weight"].std().item() < 0.03


def test_vision_weights_load_into_transformers_siglip(ckpt):
    from transformers import SiglipVisionConfig, SiglipVisionModel

    cfg = tiny_lavida_config()
    prefix = "model.vision_tower.vision_tower.vision_model."
    tensors = _load_all(ckpt)
    vision = {k.removeprefix(prefix): t for k, t in tensors.items() if k.startswith(prefix)}
    assert len(vision) == sum(k.startswith("model.vision_tower.") for k in tensors)
    model = SiglipVisionModel(SiglipVisionConfig(**cfg["vision_config"], vision_use_head=False))
    model.load_state_dict(vision, strict=True)


def test_real_size_key_shapes():
    cfg = tiny_lavida_config(
        d_model=4096, n_layers=32, n_heads=32, n_kv_heads=32, mlp_hidden_size=12288, vocab_size=126464,
        embedding_size=126464, mm_hidden_size=1152,
        vision_config={"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 26,
                       "num_attention_heads": 16},
    )
    keys = expected_lavida_keys(cfg)
    assert keys["model.transformer.blocks.31.up_proj.weight"] == (12288, 4096)
    assert keys["model.transformer.blocks.0.k_proj.weight"] == (4096, 4096)
    vp = "model.vision_tower.vision_tower.vision_model.encoder.layers."
    assert keys[vp + "25.mlp.fc1.weight"] == (4304, 1152) and vp + "26.mlp.fc1.weight" not in keys


def test_tokenizer_matches_config(ckpt):
    cfg = json.loads((ckpt / "config.json").read_text())
    tok = AutoTokenizer.from_pretrained(str(ckpt), local_files_only=True)
    assert tok.convert_tokens_to_ids("<|mdm_mask|>") == cfg["mask_token_id"]
    assert tok.convert_tokens_to_ids("<|endoftext|>") == cfg["eos_token_id"] == tok.eos_token_id
    assert tok.convert_tokens_to_ids("<|eot_id|>") == cfg["eot_token_id"]
    assert len(tok) <= cfg["vocab_size"]
    ids = tok("Résumé: 42% ≥ 7", add_special_tokens=False)["input_ids"]  # byte-level: any text encodes
    assert tok.decode(ids) == "Résumé: 42% ≥ 7" and tok.unk_token_id not in ids


def test_single_shard_and_dtype(tmp_path):
    out = write_tiny_lavida_checkpoint(tmp_path, shards=1, dtype=torch.bfloat16)
    assert (out / "model.safetensors").is_file() and not (out / "model.safetensors.index.json").exists()
    tensors = load_file(str(out / "model.safetensors"))
    assert set(tensors) == set(expected_lavida_keys(tiny_lavida_config()))
    assert all(t.dtype == torch.bfloat16 for t in tensors.values())


def test_deterministic_from_seed(ckpt, tmp_path):
    same = _load_all(write_tiny_lavida_checkpoint(tmp_path / "a", seed=0, shards=3))
    other = _load_all(write_tiny_lavida_checkpoint(tmp_path / "b", seed=1))
    first = _load_all(ckpt)
    assert all(torch.equal(first[k], same[k]) for k in first)
    assert not torch.equal(first["model.transformer.wte.weight"], other["model.transformer.wte.weight"])


def test_sincos_position_init(ckpt, tmp_path):
    from shirg.errors import ConfigError
    from shirg.testing import sincos_2d

    key = "model.vision_tower.vision_tower.vision_model.embeddings.position_embedding.weight"
    table = _load_all(write_tiny_lavida_checkpoint(tmp_path / "s", seed=0, vision_position="sincos"))[key]
    grid = int(round(table.shape[0] ** 0.5))
    assert torch.equal(table, sincos_2d(grid, table.shape[1]))
    # patch (row 0, col 0) is all sin(0) = 0 and cos(0) = 1; rows differ in the first half, columns in the second
    half, quarter = table.shape[1] // 2, table.shape[1] // 4
    assert torch.equal(table[0], torch.cat([torch.zeros(quarter), torch.ones(quarter)] * 2))
    assert torch.equal(table[1, :half], table[0, :half]) and not torch.equal(table[1, half:], table[0, half:])
    assert torch.equal(table[grid, half:], table[0, half:]) and not torch.equal(table[grid, :half], table[0, :half])
    assert not torch.equal(table, _load_all(ckpt)[key])  # the default stays N(0, 0.02)
    with pytest.raises(ConfigError, match="vision_position"):
        write_tiny_lavida_checkpoint(tmp_path / "x", vision_position="learned")


def test_fan_in_linear_init(ckpt, tmp_path):
    from shirg.errors import ConfigError

    normal = _load_all(ckpt)
    wide = _load_all(write_tiny_lavida_checkpoint(tmp_path / "f", seed=0, linear_init="fan_in"))
    q = "model.transformer.blocks.0.q_proj.weight"
    fan_in = wide[q].shape[1]
    assert torch.allclose(wide[q], normal[q] / 0.02 / fan_in**0.5)  # same draw, std 1 / sqrt(fan_in)
    proj = wide["model.mm_projector.0.weight"]
    assert torch.allclose(proj.std(), torch.tensor(proj.shape[1] ** -0.5), rtol=0.2)
    for kept in ("model.transformer.wte.weight", "model.mm_projector.0.bias",
                 "model.vision_tower.vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.weight"):
        assert torch.equal(wide[kept], normal[kept]), kept
    with pytest.raises(ConfigError, match="linear_init"):
        write_tiny_lavida_checkpoint(tmp_path / "x", linear_init="xavier")


def test_vision_centre_init(ckpt, tmp_path):
    from shirg.testing import sincos_2d

    normal = _load_all(ckpt)
    centred = _load_all(write_tiny_lavida_checkpoint(tmp_path / "c", seed=0, vision_position="sincos",
                                                     vision_centre=True))
    pre = "model.vision_tower.vision_tower.vision_model.embeddings."
    table = centred[pre + "position_embedding.weight"]
    grid = int(round(table.shape[0] ** 0.5))
    raw = sincos_2d(grid, table.shape[1])
    assert torch.allclose(table, raw - raw.mean(0), atol=1e-6) and table.mean(0).abs().max() < 1e-5
    conv, bias = centred[pre + "patch_embedding.weight"], centred[pre + "patch_embedding.bias"]
    assert torch.allclose(conv, normal[pre + "patch_embedding.weight"]
                          - normal[pre + "patch_embedding.weight"].mean(dim=(1, 2, 3), keepdim=True), atol=1e-7)
    assert not bias.any()
    # a uniform patch of any one value (white after SigLIP's normalisation: +1) embeds to zero
    white = torch.nn.functional.conv2d(torch.ones(1, 3, 14, 14), conv, bias, stride=14)
    assert white.abs().max() < 1e-5
    red = torch.tensor([0.68, -0.69, -0.69])[None, :, None, None].expand(1, 3, 14, 14)
    assert torch.nn.functional.conv2d(red, conv, bias, stride=14).abs().max() > 1e-2  # colour survives
    assert torch.equal(centred["model.transformer.wte.weight"], normal["model.transformer.wte.weight"])


def test_tokenizer_bare_words(tmp_path):
    from shirg.errors import ConfigError
    from shirg.testing import build_tiny_tokenizer

    words = ["red", "purple", "circle", "empty"]
    plain = AutoTokenizer.from_pretrained(str(build_tiny_tokenizer(tmp_path / "w", words)))
    bare = AutoTokenizer.from_pretrained(str(build_tiny_tokenizer(tmp_path / "b", words, ["purple", "empty"])))

    def pieces(tok, text):
        return tok.convert_ids_to_tokens(tok(text, add_special_tokens=False)["input_ids"])

    # without bare words, an answer's first word (no space before it) is spelt in pieces
    assert len(pieces(plain, "purple")) > 1 and pieces(plain, " purple") == ["Ġpurple"]
    assert pieces(bare, "purple circle") == ["purple", "Ġcircle"]
    assert pieces(bare, "empty") == ["empty"] and pieces(bare, " empty") == ["Ġempty"]
    assert len(bare) == len(plain)  # same vocabulary size: the special tokens keep their ids
    assert bare.convert_tokens_to_ids("<|mdm_mask|>") == plain.convert_tokens_to_ids("<|mdm_mask|>")
    too_many = [f"{a}{b}{c}qz" for a in "bcdfgh" for b in "aeiou" for c in "klmnp"]
    with pytest.raises(ConfigError, match="no single piece"):
        build_tiny_tokenizer(tmp_path / "x", (), too_many)


def test_make_tiny_spec_bare_words(tmp_path, capsys):
    from shirg.cli import main

    spec = tmp_path / "model.yaml"
    spec.write_text("tokenizer_words: [purple, circle]\ntokenizer_bare_words: [purple]\n")
    assert main(["make-tiny", "--config", str(spec), "--out", str(tmp_path / "ck")]) == 0
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "ck"))
    assert tok.convert_ids_to_tokens(tok("purple circle", add_special_tokens=False)["input_ids"]) == [
        "purple", "Ġcircle"]
    spec.write_text("tokenizer_bare_words: purple\n")
    assert main(["make-tiny", "--config", str(spec), "--out", str(tmp_path / "bad")]) == 2
    assert "tokenizer_bare_words must be a list of words" in capsys.readouterr().err
