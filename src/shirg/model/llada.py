"""LLaDA, the masked-diffusion language model inside LaViDa, written from docs/lavida_facts.md section 3.

A Llama-shaped transformer (RMSNorm, RoPE, SwiGLU, no biases, untied head) whose attention is fully
bidirectional. Module names match LaViDa's checkpoint keys (``transformer.blocks.{i}.q_proj`` ...) so
a state dict loads without renaming. Besides a plain forward it offers the prefix-DLM cache of
section 4: :meth:`LLaDAModel.prefill` runs the prompt once and :meth:`LLaDAModel.forward_cached`
runs only the answer slots against the cached keys and values.

Shapes: B batch, L sequence length, d ``d_model``, H heads, Hkv key/value heads, hd head dim.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from shirg.errors import ConfigError

_REQUIRED = (
    "d_model",
    "n_layers",
    "n_heads",
    "mlp_hidden_size",
    "vocab_size",
    "mask_token_id",
    "eos_token_id",
)


@dataclass(kw_only=True)
class LLaDAConfig:
    """Every number of the language model. ``n_kv_heads`` defaults to ``n_heads`` and
    ``embedding_size`` (rows of ``wte`` and of the LM head) to ``vocab_size``."""

    d_model: int
    n_layers: int
    n_heads: int
    mlp_hidden_size: int
    vocab_size: int
    mask_token_id: int
    eos_token_id: int
    n_kv_heads: int | None = None
    embedding_size: int | None = None
    rope_theta: float = 500000.0
    rms_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.embedding_size is None:
            self.embedding_size = self.vocab_size
        for name in ("d_model", "n_layers", "n_heads", "n_kv_heads", "mlp_hidden_size", "vocab_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"LLaDAConfig.{name} must be positive, got {getattr(self, name)}.")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ConfigError(
                f"d_model {self.d_model} must split into n_heads {self.n_heads} heads of even size "
                "(RoPE rotates pairs); pick d_model divisible by 2 * n_heads."
            )
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(
                f"n_heads {self.n_heads} must be a multiple of n_kv_heads {self.n_kv_heads} "
                "(each key/value head serves a whole group of query heads)."
            )
        if self.embedding_size < self.vocab_size:
            raise ConfigError(
                f"embedding_size {self.embedding_size} is smaller than vocab_size {self.vocab_size}; "
                "it counts the rows of wte / ff_out and must be >= vocab_size."
            )
        for name in ("mask_token_id", "eos_token_id"):
            if not 0 <= getattr(self, name) < self.embedding_size:
                raise ConfigError(
                    f"{name} {getattr(self, name)} is outside the embedding table "
                    f"(size {self.embedding_size}); check the config's token ids."
                )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LLaDAConfig:
        """Read the LLaDA fields of a LaViDa ``config.json`` dict; unknown keys are ignored."""
        missing = [k for k in _REQUIRED if d.get(k) is None]
        if missing:
            raise ConfigError(
                f"config is missing LLaDA field(s) {', '.join(missing)}; a LaViDa config.json must define "
                f"{', '.join(_REQUIRED)} (optional: n_kv_heads, embedding_size, rope_theta, rms_norm_eps)."
            )
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known and v is not None})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) with the variance in fp32, cast back to x's dtype, then * weight."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rope_cos_sin(
    position_ids: Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """cos, sin [B, 1, L, hd] for integer positions [B, L], computed in fp32 then cast to ``dtype``."""
    exponent = torch.arange(0, head_dim, 2, device=position_ids.device).float() / head_dim
    inv_freq = 1.0 / theta**exponent
    angles = position_ids.float()[..., None] * inv_freq  # [B, L, hd/2]
    angles = torch.cat([angles, angles], dim=-1)[:, None]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x [B, H, L, hd] in the half-split layout: pairs are (i, i + hd/2).

    The rotation runs in fp32 (as LLaDA's rope_full_precision) and is cast back to x's dtype.
    """
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)
    return (xf * cos.float() + torch.cat([-x2, x1], dim=-1) * sin.float()).to(x.dtype)


class LLaDABlock(nn.Module):
    """Pre-norm attention + SwiGLU block; names match ``transformer.blocks.{i}.*`` checkpoint keys."""

    def __init__(self, cfg: LLaDAConfig) -> None:
        super().__init__()
        d, hd, mlp = cfg.d_model, cfg.head_dim, cfg.mlp_hidden_size
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, hd
        self.attn_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.ff_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.q_proj = nn.Linear(d, cfg.n_heads * hd, bias=False)
        self.k_proj = nn.Linear(d, cfg.n_kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(d, cfg.n_kv_heads * hd, bias=False)
        self.attn_out = nn.Linear(cfg.n_heads * hd, d, bias=False)
        self.ff_proj = nn.Linear(d, mlp, bias=False)
        self.up_proj = nn.Linear(d, mlp, bias=False)
        self.ff_out = nn.Linear(mlp, d, bias=False)

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        attn_mask: Tensor,
        past: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """x [B, L, d]; cos/sin [B, 1, L, hd]; attn_mask bool [B, 1, 1, Lpast + L] (True = attend);
        past: cached (k, v) [B, Hkv, Lpast, hd] placed before this call's keys.
        Returns x [B, L, d] and this call's k, v [B, Hkv, L, hd] (after RoPE)."""
        B, L, _ = x.shape
        h = self.attn_norm(x)
        q = self.q_proj(h).view(B, L, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(h).view(B, L, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(h).view(B, L, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        keys, values = k, v
        if past is not None:
            keys, values = torch.cat([past[0].to(k.dtype), k], 2), torch.cat([past[1].to(v.dtype), v], 2)
        if self.n_kv_heads != self.n_heads:
            group = self.n_heads // self.n_kv_heads
            keys, values = keys.repeat_interleave(group, 1), values.repeat_interleave(group, 1)
        a = F.scaled_dot_product_attention(q, keys, values, attn_mask=attn_mask)
        x = x + self.attn_out(a.transpose(1, 2).reshape(B, L, -1))
        h = self.ff_norm(x)
        x = x + self.ff_out(F.silu(self.ff_proj(h)) * self.up_proj(h))
        return x, k, v


class PrefixCache:
    """Per-layer keys/values of a prompt, for the prefix-DLM answer steps.

    ``key_mask`` bool [B, Lp] (False = padding), ``next_position`` long [B] (position of the first
    answer slot). Each layer is stored through :meth:`pack` and read back through :meth:`unpack`;
    a quantized cache (int8 / fp8) overrides those two and nothing else.
    """

    def __init__(self, key_mask: Tensor, next_position: Tensor) -> None:
        self.key_mask = key_mask
        self.next_position = next_position
        self._layers: list[tuple[Tensor, ...]] = []

    def pack(self, k: Tensor, v: Tensor) -> tuple[Tensor, ...]:
        """Store form of one layer's k, v [B, Hkv, Lp, hd]."""
        return (k, v)

    def unpack(self, packed: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        return packed[0], packed[1]

    def append(self, k: Tensor, v: Tensor) -> None:
        self._layers.append(self.pack(k, v))

    def layer(self, i: int) -> tuple[Tensor, Tensor]:
        """k, v [B, Hkv, Lp, hd] of layer i, in compute precision."""
        return self.unpack(self._layers[i])

    def __len__(self) -> int:
        return len(self._layers)

    def nbytes(self) -> int:
        """Bytes held by the stored keys and values (all layers, including any scales)."""
        return sum(t.numel() * t.element_size() for packed in self._layers for t in packed)


def _attention_mask(key_mask: Tensor) -> Tensor:
    """[B, Lk] bool -> [B, 1, 1, Lk]. A sample with no real key attends everywhere so it stays finite."""
    key_mask = key_mask.bool()
    key_mask = key_mask | ~key_mask.any(-1, keepdim=True)
    return key_mask[:, None, None, :]


class LLaDAModel(nn.Module):
    """The LLaDA transformer. State-dict keys are exactly LaViDa's (without its ``model.`` prefix)."""

    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__()
        self.config = config
        self.gradient_checkpointing = False
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(config.embedding_size, config.d_model),
                "blocks": nn.ModuleList(LLaDABlock(config) for _ in range(config.n_layers)),
                "ln_f": RMSNorm(config.d_model, config.rms_norm_eps),
                "ff_out": nn.Linear(config.d_model, config.embedding_size, bias=False),
            }
        )

    @torch.no_grad()
    def init_weights(self, std: float = 0.02) -> None:
        """Random init for tests and training from scratch: N(0, std) matrices, unit norms."""
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=std)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)

    def embed(self, input_ids: Tensor) -> Tensor:
        """input_ids long [B, L] (real token ids, no image placeholders) -> embeddings [B, L, d]."""
        return self.transformer["wte"](input_ids)

    def _rope(self, position_ids: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        # kept in fp32 whatever the compute dtype: apply_rope rotates in fp32
        return rope_cos_sin(position_ids, self.config.head_dim, self.config.rope_theta, torch.float32)

    def _head(self, x: Tensor) -> Tensor:
        return self.transformer["ff_out"](self.transformer["ln_f"](x))

    def forward(
        self,
        inputs_embeds: Tensor,
        key_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        logits_tail: int | None = None,
    ) -> Tensor:
        """Full bidirectional pass.

        inputs_embeds [B, L, d]; key_mask bool [B, L], False marks padding that no query attends to
        (padding rows still get finite logits); position_ids long [B, L], default 0..L-1.
        logits_tail: apply the LM head only to the last ``logits_tail`` positions (training needs
        logits on the answer slots only; at 8B the head over a whole prompt costs gigabytes).
        Returns logits [B, L, embedding_size] (or [B, logits_tail, embedding_size]).
        """
        B, L, _ = inputs_embeds.shape
        if key_mask is None:
            key_mask = torch.ones(B, L, dtype=torch.bool, device=inputs_embeds.device)
        if position_ids is None:
            position_ids = torch.arange(L, device=inputs_embeds.device).expand(B, L)
        cos, sin = self._rope(position_ids, inputs_embeds.dtype)
        attn_mask = _attention_mask(key_mask)
        x = inputs_embeds
        for block in self.transformer["blocks"]:
            if self.gradient_checkpointing and self.training:
                x = checkpoint(block, x, cos, sin, attn_mask, use_reentrant=False)[0]
            else:
                x = block(x, cos, sin, attn_mask)[0]
        return self._head(x if logits_tail is None else x[:, -logits_tail:])

    def prefill(
        self,
        inputs_embeds: Tensor,
        key_mask: Tensor,
        position_ids: Tensor | None = None,
        cache_factory: Callable[[Tensor, Tensor], PrefixCache] = PrefixCache,
    ) -> PrefixCache:
        """Run the prompt once and cache every layer's keys/values (after RoPE); no LM head.

        Prompts are RIGHT-padded: inputs_embeds [B, Lp, d] holds each sample's real tokens first,
        key_mask bool [B, Lp] is True on them. position_ids [B, Lp] default 0..Lp-1, so the answer of
        sample b starts at position key_mask[b].sum(); in general at (max real position) + 1.
        ``cache_factory(key_mask, next_position)`` builds the cache (e.g. a quantized subclass).
        """
        B, L, _ = inputs_embeds.shape
        key_mask = key_mask.bool()
        if position_ids is None:
            position_ids = torch.arange(L, device=inputs_embeds.device).expand(B, L)
        next_position = position_ids.masked_fill(~key_mask, -1).amax(-1) + 1
        cache = cache_factory(key_mask, next_position)
        cos, sin = self._rope(position_ids, inputs_embeds.dtype)
        attn_mask = _attention_mask(key_mask)
        x = inputs_embeds
        for block in self.transformer["blocks"]:
            x, k, v = block(x, cos, sin, attn_mask)
            cache.append(k, v)
        return cache

    def forward_cached(self, answer_embeds: Tensor, cache: PrefixCache) -> Tensor:
        """Answer slots [B, La, d] against a prompt cache -> logits [B, La, embedding_size].

        Answer slots attend to the real prefix keys and to every answer slot; their positions are
        cache.next_position + 0..La-1. The prefix was computed without seeing the answers (prefix-DLM).
        """
        B, La, _ = answer_embeds.shape
        steps = torch.arange(La, device=answer_embeds.device)
        position_ids = cache.next_position[:, None] + steps
        cos, sin = self._rope(position_ids, answer_embeds.dtype)
        answer_mask = torch.ones(B, La, dtype=torch.bool, device=answer_embeds.device)
        attn_mask = _attention_mask(torch.cat([cache.key_mask, answer_mask], dim=1))
        x = answer_embeds
        for i, block in enumerate(self.transformer["blocks"]):
            x = block(x, cos, sin, attn_mask, past=cache.layer(i))[0]
        return self._head(x)
