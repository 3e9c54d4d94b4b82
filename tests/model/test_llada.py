"""LLaDA transformer: parity with transformers' Llama made bidirectional, and the prefix-DLM cache.

transformers 5.24 returns a 4D attention mask unchanged (masking_utils._preprocess_mask_arguments)
and hands it to SDPA with is_causal=False; a boolean mask means True = attend. Without a mask Llama
is causal, which the parity test checks so that a causal bug on our side could not pass.
"""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from shirg.errors import ConfigError
from shirg.model.llada import LLaDAConfig, LLaDAModel, PrefixCache

TINY = dict(
    d_model=64,
    n_layers=2,
    n_heads=4,
    n_kv_heads=4,
    mlp_hidden_size=96,
    vocab_size=300,
    embedding_size=304,
    mask_token_id=299,
    eos_token_id=298,
    rope_theta=500000.0,
)


def tiny_model(n_kv_heads: int = 4, seed: int = 0) -> LLaDAModel:
    torch.manual_seed(seed)
    model = LLaDAModel(LLaDAConfig(**{**TINY, "n_kv_heads": n_kv_heads}))
    model.init_weights(std=0.1)  # larger than 0.02 so the attention pattern actually matters
    for name, p in model.named_parameters():
        if name.endswith("norm.weight") or name.endswith("ln_f.weight"):
            p.data.uniform_(0.5, 1.5)
    return model.eval()


def to_llama(model: LLaDAModel) -> LlamaForCausalLM:
    cfg = model.config
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=cfg.embedding_size,
            hidden_size=cfg.d_model,
            intermediate_size=cfg.mlp_hidden_size,
            num_hidden_layers=cfg.n_layers,
            num_attention_heads=cfg.n_heads,
            num_key_value_heads=cfg.n_kv_heads,
            rms_norm_eps=cfg.rms_norm_eps,
            rope_theta=cfg.rope_theta,
            max_position_embeddings=256,
            tie_word_embeddings=False,
            attn_implementation="sdpa",
        )
    )
    renames = [
        ("transformer.wte.", "model.embed_tokens."),
        ("transformer.blocks.", "model.layers."),
        ("transformer.ln_f.", "model.norm."),
        ("transformer.ff_out.", "lm_head."),
        (".attn_norm.", ".input_layernorm."),
        (".ff_norm.", ".post_attention_layernorm."),
        (".q_proj.", ".self_attn.q_proj."),
        (".k_proj.", ".self_attn.k_proj."),
        (".v_proj.", ".self_attn.v_proj."),
        (".attn_out.", ".self_attn.o_proj."),
        (".ff_proj.", ".mlp.gate_proj."),
        (".up_proj.", ".mlp.up_proj."),
        (".ff_out.", ".mlp.down_proj."),
    ]
    state = {}
    for key, value in model.state_dict().items():
        for old, new in renames:
            key = key.replace(old, new)
        state[key] = value
    missing, unexpected = llama.load_state_dict(state, strict=False)
    assert not unexpected and all("rotary" in k for k in missing), (missing, unexpected)
    return llama.eval()


def llama_logits(llama: LlamaForCausalLM, embeds, mask4d=None, position_ids=None) -> torch.Tensor:
    with torch.no_grad():
        out = llama(inputs_embeds=embeds, attention_mask=mask4d, position_ids=position_ids, use_cache=False)
    return out.logits


@pytest.mark.parametrize("n_kv_heads", [4, 2])
def test_matches_bidirectional_llama(n_kv_heads):
    model = tiny_model(n_kv_heads)
    llama = to_llama(model)
    ids = torch.randint(0, 300, (2, 12), generator=torch.Generator().manual_seed(1))
    embeds = model.embed(ids)
    full = torch.ones(2, 1, 12, 12, dtype=torch.bool)
    with torch.no_grad():
        ours = model(embeds)
        ours_shifted = model(embeds, position_ids=torch.arange(12).expand(2, 12) + torch.tensor([[3], [40]]))
    assert ours.shape == (2, 12, 304)
    assert (ours - llama_logits(llama, embeds, full)).abs().max() < 1e-5
    shifted = torch.arange(12).expand(2, 12) + torch.tensor([[3], [40]])
    assert (ours_shifted - llama_logits(llama, embeds, full, shifted)).abs().max() < 1e-5
    # Llama without a mask is causal; a causal bug on our side would show up as this gap.
    assert (ours - llama_logits(llama, embeds)).abs().max() > 1e-3


def prefix_dlm_mask(prefix_mask: torch.Tensor, answer_len: int) -> torch.Tensor:
    """[B, Lp] prompt key mask -> [B, 1, L, L] with L = Lp + La: prefix rows see real prefix keys only,
    answer rows see real prefix keys and every answer slot."""
    B, Lp = prefix_mask.shape
    L = Lp + answer_len
    keys = torch.cat([prefix_mask, torch.ones(B, answer_len, dtype=torch.bool)], 1)
    mask = keys[:, None, None, :].expand(B, 1, L, L).clone()
    mask[:, :, :Lp, Lp:] = False
    return mask


def test_cache_matches_masked_full_pass():
    model = tiny_model()
    llama = to_llama(model)
    gen = torch.Generator().manual_seed(2)
    prefix, answer = (
        model.embed(torch.randint(0, 300, (2, 9), generator=gen)),
        model.embed(torch.full((2, 5), 299)),
    )
    prefix_mask = torch.ones(2, 9, dtype=torch.bool)
    with torch.no_grad():
        cache = model.prefill(prefix, prefix_mask)
        ours = model.forward_cached(answer, cache)
        bidirectional = model(torch.cat([prefix, answer], 1))[:, 9:]
    reference = llama_logits(llama, torch.cat([prefix, answer], 1), prefix_dlm_mask(prefix_mask, 5))[:, 9:]
    assert ours.shape == (2, 5, 304)
    assert (ours - reference).abs().max() < 1e-5
    # The prefix-DLM approximation really differs from a full bidirectional pass.
    assert (ours - bidirectional).abs().max() > 1e-4
    assert cache.next_position.tolist() == [9, 9] and len(cache) == 2


def test_right_padded_batch_equals_each_prompt_alone():
    model = tiny_model(n_kv_heads=2)
    llama = to_llama(model)
    gen = torch.Generator().manual_seed(3)
    lengths, Lp, La = [4, 9, 6], 9, 5
    prefix = model.embed(torch.randint(0, 300, (3, Lp), generator=gen))
    answer = model.embed(torch.randint(0, 300, (3, La), generator=gen))
    prefix_mask = torch.arange(Lp)[None] < torch.tensor(lengths)[:, None]
    with torch.no_grad():
        cache = model.prefill(prefix, prefix_mask)
        batched = model.forward_cached(answer, cache)
        alone = [
            model.forward_cached(
                answer[b : b + 1], model.prefill(prefix[b : b + 1, :n], torch.ones(1, n).bool())
            )
            for b, n in enumerate(lengths)
        ]
    assert cache.next_position.tolist() == lengths
    assert (batched - torch.cat(alone)).abs().max() < 1e-5
    # Same through Llama: padded prompt, answers at positions n..n+La-1.
    positions = torch.cat(
        [torch.arange(Lp).expand(3, Lp), torch.tensor(lengths)[:, None] + torch.arange(La)], 1
    )
    reference = llama_logits(
        llama, torch.cat([prefix, answer], 1), prefix_dlm_mask(prefix_mask, La), positions
    )[:, Lp:]
    assert (batched - reference).abs().max() < 1e-5


def test_padding_is_ignored_and_never_nan():
    model = tiny_model()
    embeds = model.embed(torch.randint(0, 300, (3, 8), generator=torch.Generator().manual_seed(4)))
    key_mask = torch.tensor([[1] * 8, [1] * 5 + [0] * 3, [0] * 8], dtype=torch.bool)
    noisy = embeds.clone()
    noisy[1, 5:] = 100.0
    with torch.no_grad():
        logits = model(embeds, key_mask)
        logits_noisy = model(noisy, key_mask)
        alone = model(embeds[1:2, :5])
        cache = model.prefill(embeds, key_mask)
        answers = model.forward_cached(embeds[:, :3], cache)
    assert torch.isfinite(logits).all() and torch.isfinite(answers).all()
    assert (logits[1, :5] - logits_noisy[1, :5]).abs().max() < 1e-5
    assert (logits[1, :5] - alone[0]).abs().max() < 1e-5


def test_meta_construction_and_checkpoint_keys():
    config = LLaDAConfig(**TINY)
    with torch.device("meta"):
        model = LLaDAModel(config)
    expected = ["transformer.wte.weight"]
    for i in range(2):
        expected += [
            f"transformer.blocks.{i}.{name}.weight"
            for name in (
                "attn_norm",
                "ff_norm",
                "q_proj",
                "k_proj",
                "v_proj",
                "attn_out",
                "ff_proj",
                "up_proj",
                "ff_out",
            )
        ]
    expected += ["transformer.ln_f.weight", "transformer.ff_out.weight"]
    state = model.state_dict()
    assert sorted(state) == sorted(expected)
    assert all(t.is_meta for t in state.values())
    assert state["transformer.wte.weight"].shape == (304, 64)
    assert state["transformer.ff_out.weight"].shape == (304, 64)
    assert state["transformer.blocks.0.ff_proj.weight"].shape == (96, 64)
    assert state["transformer.blocks.0.ff_out.weight"].shape == (64, 96)


def test_gradient_checkpointing_gives_same_gradients():
    grads = []
    for checkpointing in (False, True):
        model = tiny_model().train()
        model.gradient_checkpointing = checkpointing
        embeds = model.embed(torch.arange(10)[None])
        model(embeds).logsumexp(-1).mean().backward()
        grads.append(model.transformer["blocks"][0].q_proj.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


class HalfCache(PrefixCache):
    def pack(self, k, v):
        return (k.half(), v.half())

    def unpack(self, packed):
        return packed[0].float(), packed[1].float()


def test_cache_subclass_stores_its_own_format():
    model = tiny_model()
    embeds = model.embed(torch.arange(12).view(2, 6))
    mask = torch.ones(2, 6, dtype=torch.bool)
    with torch.no_grad():
        full, half = model.prefill(embeds, mask), model.prefill(embeds, mask, cache_factory=HalfCache)
        a = model.forward_cached(embeds[:, :2], full)
        b = model.forward_cached(embeds[:, :2], half)
    assert half.nbytes() * 2 == full.nbytes() == 2 * 2 * (2 * 4 * 6 * 16) * 4
    assert half.layer(0)[0].dtype == torch.float32
    assert (a - b).abs().max() < 1e-2


def test_config_from_dict():
    raw = {
        **TINY,
        "architectures": ["LlavaLladaForMaskedDiffusion"],
        "mm_hidden_size": 1152,
        "n_kv_heads": None,
    }
    config = LLaDAConfig.from_dict(raw)
    assert config.n_kv_heads == 4 and config.head_dim == 16 and config.embedding_size == 304
    assert LLaDAConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="mask_token_id"):
        LLaDAConfig.from_dict({k: v for k, v in TINY.items() if k != "mask_token_id"})
    with pytest.raises(ConfigError, match="n_kv_heads"):
        LLaDAConfig(**{**TINY, "n_kv_heads": 3})
    with pytest.raises(ConfigError, match="embedding_size"):
        LLaDAConfig(**{**TINY, "embedding_size": 200})


def test_logits_tail_equals_the_tail_of_full_logits():
    torch.manual_seed(0)
    cfg = LLaDAConfig(d_model=32, n_layers=2, n_heads=4, mlp_hidden_size=48, vocab_size=50, mask_token_id=49,
                      eos_token_id=48)
    model = LLaDAModel(cfg)
    model.init_weights()
    x = torch.randn(2, 9, 32)
    mask = torch.tensor([[True] * 9, [True] * 6 + [False] * 3])
    full = model(x, mask)
    tail = model(x, mask, logits_tail=4)
    assert tail.shape == (2, 4, 50)
    torch.testing.assert_close(tail, full[:, -4:])


def test_rope_rotates_in_fp32_for_bf16_inputs():
    from shirg.model.llada import apply_rope, rope_cos_sin

    torch.manual_seed(0)
    pos = torch.arange(4000, 4008)[None]
    cos, sin = rope_cos_sin(pos, 64, 500000.0, torch.float32)
    x = torch.randn(1, 2, 8, 64)
    ref = apply_rope(x, cos, sin)
    got = apply_rope(x.bfloat16(), cos, sin)
    assert got.dtype == torch.bfloat16
    # one bf16 rounding of the inputs and one of the result, no bf16 rounding of the angles
    bound = 2 * 2**-8 * x.abs().max() * 2
    assert (got.float() - ref).abs().max() <= bound
    sloppy = apply_rope(x.bfloat16(), cos.bfloat16(), sin.bfloat16())
    assert (got.float() - ref).abs().max() < (sloppy.float() - ref).abs().max()
