"""Storage formats of the prefix KV cache (docs/method.md section 7).

The visual prefix is most of the cache. Each format packs one layer's K and V when the prefix is
built and unpacks it (to the compute dtype) when a denoising step reads that layer:

- ``native``: as computed.
- ``fp16`` / ``bf16``: 16-bit storage (halves an fp32 cache; LaViDa already runs in bf16, so on
  GPU this is the baseline, not a gain).
- ``int8``: symmetric, per-channel scales for K (one per head and channel over the prefix),
  per-token scales for V (one per head and token); scales kept in fp16.
- ``fp8``: float8 e4m3 with the same scale layout, where this torch has the dtype.

Note: the literature's "PrefixKV" (arXiv 2412.03409) is per-layer KV eviction, not 16-bit storage.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor

from shirg.errors import ConfigError
from shirg.model.llada import PrefixCache

KV_FORMATS = ("native", "fp16", "bf16", "int8", "fp8")
INT8_MAX = 127.0
FP8_MAX = 448.0  # largest finite float8_e4m3fn


class CastCache(PrefixCache):
    """K and V stored in a 16-bit dtype, returned in the dtype they were computed in."""

    def __init__(self, key_mask: Tensor, next_position: Tensor, store_dtype: torch.dtype) -> None:
        super().__init__(key_mask, next_position)
        self.store_dtype = store_dtype

    def pack(self, k: Tensor, v: Tensor) -> tuple[Tensor, ...]:
        self.compute_dtype = k.dtype
        return (k.to(self.store_dtype), v.to(self.store_dtype))

    def unpack(self, packed: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        return packed[0].to(self.compute_dtype), packed[1].to(self.compute_dtype)


def quantize(x: Tensor, dim: int, qmax: float, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Symmetric quantization with one scale per slice along ``dim`` reduced away.

    x [B, H, L, hd]; dim=2 gives per-channel scales [B, H, 1, hd], dim=3 per-token [B, H, L, 1].
    """
    amax = x.float().abs().amax(dim=dim, keepdim=True)
    # Clamp in fp32 to fp16's normal range BEFORE the cast: a smaller floor (e.g. 1e-8) underflows
    # to a zero scale, and an all-zero slice (right padding) then quantizes 0 / 0 = NaN, which
    # fp8 keeps and which poisons attention even where the key is masked out.
    fp16 = torch.finfo(torch.float16)
    scale = (amax / qmax).clamp(min=fp16.tiny, max=fp16.max).to(torch.float16)
    q = x.float() / scale.float()
    q = q.round().clamp(-qmax, qmax).to(dtype) if dtype == torch.int8 else q.clamp(-qmax, qmax).to(dtype)
    return q, scale


class QuantCache(PrefixCache):
    """int8 or fp8 storage: per-channel scales for K, per-token scales for V."""

    def __init__(self, key_mask: Tensor, next_position: Tensor, store_dtype: torch.dtype, qmax: float) -> None:
        super().__init__(key_mask, next_position)
        self.store_dtype, self.qmax = store_dtype, qmax

    def pack(self, k: Tensor, v: Tensor) -> tuple[Tensor, ...]:
        self.compute_dtype = k.dtype
        qk, sk = quantize(k, 2, self.qmax, self.store_dtype)
        qv, sv = quantize(v, 3, self.qmax, self.store_dtype)
        return (qk, sk, qv, sv)

    def unpack(self, packed: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        qk, sk, qv, sv = packed
        k = (qk.float() * sk.float()).to(self.compute_dtype)
        v = (qv.float() * sv.float()).to(self.compute_dtype)
        return k, v

    def scales(self, i: int) -> tuple[Tensor, Tensor]:
        """Stored scales of layer i: K per channel [B, Hkv, 1, hd], V per token [B, Hkv, Lp, 1] (fp16)."""
        _, sk, _, sv = self._layers[i]
        return sk, sv


def fp8_available() -> bool:
    if not hasattr(torch, "float8_e4m3fn"):
        return False
    try:
        torch.ones(2).to(torch.float8_e4m3fn).float()
    except (RuntimeError, TypeError):
        return False
    return True


def cache_factory(kind: str):
    """``kind`` -> a callable(key_mask, next_position) building the cache (for LLaDAModel.prefill)."""
    if kind == "native":
        return PrefixCache
    if kind in ("fp16", "bf16"):
        return partial(CastCache, store_dtype=torch.float16 if kind == "fp16" else torch.bfloat16)
    if kind == "int8":
        return partial(QuantCache, store_dtype=torch.int8, qmax=INT8_MAX)
    if kind == "fp8":
        if not fp8_available():
            raise ConfigError("this torch build has no float8_e4m3fn support; use --kv-cache int8 or bf16")
        return partial(QuantCache, store_dtype=torch.float8_e4m3fn, qmax=FP8_MAX)
    raise ConfigError(f"unknown KV cache format {kind!r}; valid formats: {', '.join(KV_FORMATS)}")
