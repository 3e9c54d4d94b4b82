"""LaViDa's complementary-masking diffusion loss (docs/lavida_facts.md).

Per sample t ~ U(0, 1), p = (1 - eps) t + eps; answer slots are masked with probability p in copy 1
and exactly the complement in copy 2, so every answer slot is masked in exactly one copy. Masked
slots take the mask token's embedding; the loss is the plain mean cross-entropy over all masked
slots of both copies (no 1/t weight; EOS padding supervised). Vision features and the prompt are
computed once and shared by both copies. Attention is fully bidirectional over prompt + answer,
as the released models were trained (the prefix cache is an inference-time approximation).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shirg.model.lavida import LavidaModel
from shirg.model.options import LAVIDA_MODES, VisualOptions
from shirg.model.profile import NO_WATCH, Stopwatch
from shirg.model.visual import hires_visual, lavida_visual, splice
from shirg.train.data import Batch


def complementary_masks(seeds: Sequence[int], length: int, eps: float = 1e-3) -> Tensor:
    """Copy-1 masks [B, length] bool, one seeded draw per sample (copy 2 is the complement)."""
    rows = []
    for s in seeds:
        g = torch.Generator().manual_seed(int(s))
        t = torch.rand((), generator=g)
        p = (1 - eps) * t + eps
        rows.append(torch.rand(length, generator=g) < p)
    return torch.stack(rows) if rows else torch.zeros(0, length, dtype=torch.bool)


def as_visual_options(visual: VisualOptions | dict | None) -> VisualOptions:
    """``data.visual`` as VisualOptions (a plain dict of its fields is accepted too)."""
    if visual is None:
        return VisualOptions()
    return visual if isinstance(visual, VisualOptions) else VisualOptions(**visual)


def visual_blocks(model: LavidaModel, batch: Batch, mode: str, visual: VisualOptions | dict | None = None,
                  watch=None) -> list[Tensor]:
    """Visual token blocks [M_i, d] per sample, run in groups of one mode (``batch.modes``, else
    ``mode``) and, for high-resolution modes, one resolution and one budget (``batch.ks``, else the
    options' ``k``). ``watch``: a
    :class:`shirg.model.profile.Stopwatch` to time the stages; by default nothing is timed (a CUDA
    synchronize per stage of every micro-step would stall the GPU) unless ``SHIRG_STAGE_TIMING=1``
    is set (the GPU suite measures what the timing costs a training run)."""
    if watch is None:
        watch = Stopwatch(model.device) if os.environ.get("SHIRG_STAGE_TIMING") == "1" else NO_WATCH
    modes = batch.modes or [mode] * len(batch)
    ks = batch.ks or [0] * len(batch)  # 0: the visual options' own k
    groups: dict[tuple[str, int, int], list[int]] = {}
    for i, (m, r, k) in enumerate(zip(modes, batch.resolutions, ks, strict=True)):
        groups.setdefault((m, 0, 0) if m in LAVIDA_MODES else (m, r, k), []).append(i)
    out: list[Tensor | None] = [None] * len(batch)
    base = as_visual_options(visual)
    for (m, res, k), idx in sorted(groups.items()):
        images = [batch.images[i] for i in idx]
        if m in LAVIDA_MODES:
            blocks = lavida_visual(model, images, m, watch)
        else:
            options = replace(base, resolution=res, k=k or base.k)
            blocks = hires_visual(model, images, [batch.questions[i] for i in idx], m, options, watch)
        for i, b in zip(idx, blocks, strict=True):
            out[i] = b
    return out  # type: ignore[return-value]


def answer_logits(model: LavidaModel, embeds: Tensor, key_mask: Tensor, position_ids: Tensor, tail: int) -> Tensor:
    """LLaDA's bidirectional pass with the LM head applied only to the last ``tail`` (answer) slots."""
    return model.model(embeds, key_mask, position_ids, logits_tail=tail)


def denoise_logits(model: LavidaModel, prefix: Tensor, prefix_mask: Tensor, noisy: Tensor) -> Tensor:
    """Logits [B, La, vocab] of the answer slots ``noisy`` [B, La] (mask ids where masked) after the
    right-padded prefix [B, Lp, d]; answers continue each prompt's own positions (right padding is
    masked out of attention)."""
    B, Lp, _ = prefix.shape
    La = noisy.shape[1]
    device = prefix.device
    embeds = torch.cat([prefix, model.model.embed(noisy).to(prefix.dtype)], dim=1)
    key_mask = torch.cat([prefix_mask, torch.ones_like(noisy, dtype=torch.bool)], dim=1)
    steps = torch.arange(La, device=device)
    position_ids = torch.cat([torch.arange(Lp, device=device).expand(B, Lp),
                              prefix_mask.sum(1)[:, None] + steps], dim=1)
    return answer_logits(model, embeds, key_mask, position_ids, La)[..., :model.config.llm.vocab_size]


@dataclass
class LossOutput:
    loss: Tensor  # mean CE over all masked slots of both copies
    ce_copy1: Tensor  # mean CE over copy 1's masked slots (detached)
    ce_copy2: Tensor
    samples: int


def diffusion_loss(model: LavidaModel, batch: Batch, mode: str, visual: VisualOptions | dict | None,
                   eps: float = 1e-3, blocks: list[Tensor] | None = None) -> LossOutput:
    """Complementary-masking loss of one micro-batch (B >= 1); ``blocks``: its visual blocks when the
    caller has computed them (an auxiliary loss on them), else they are computed here."""
    vocab = model.config.llm.vocab_size
    if blocks is None:
        blocks = visual_blocks(model, batch, mode, visual)
    prefix, prefix_mask = splice(model, batch.prompt_ids, blocks)  # [B, Lp, d], right-padded
    B = prefix.shape[0]
    device = prefix.device
    answer = batch.answer_ids.to(device)
    La = answer.shape[1]
    mask1 = complementary_masks(batch.noise_seeds, La, eps).to(device)
    masks = torch.cat([mask1, ~mask1])  # [2B, La]
    targets = answer.repeat(2, 1)
    noisy = targets.masked_fill(masks, model.config.llm.mask_token_id)
    logits = denoise_logits(model, prefix.repeat(2, 1, 1), prefix_mask.repeat(2, 1), noisy)
    ce = F.cross_entropy(logits.float().reshape(-1, vocab), targets.reshape(-1), reduction="none").view(2 * B, La)
    ce = ce * masks
    loss = ce.sum() / masks.sum()  # = B * La: each slot is masked in exactly one copy
    with torch.no_grad():
        ce1 = ce[:B].sum() / mask1.sum().clamp(min=1)
        ce2 = ce[B:].sum() / (~mask1).sum().clamp(min=1)
    return LossOutput(loss=loss, ce_copy1=ce1, ce_copy2=ce2, samples=B)


class LossModule(nn.Module):
    """What accelerate wraps (DDP needs the loss computed inside the wrapped module's forward)."""

    def __init__(self, net: nn.Module, mode: str, visual: VisualOptions | dict | None, eps: float) -> None:
        super().__init__()
        self.net = net  # a PeftModel or the LavidaModel itself
        self.mode, self.visual, self.eps = mode, as_visual_options(visual), eps

    @property
    def lavida(self) -> LavidaModel:
        net = self.net
        return net.base_model.model if hasattr(net, "peft_config") else net

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """Returns a dict (loss, ce_copy1, ce_copy2, samples): DDP and accelerate walk dicts of tensors."""
        if len(batch) == 0:
            # every image of this micro-batch was unreadable: a zero loss that still touches every
            # trainable weight, so DDP's gradient reduction sees the same parameters on all processes
            zero = sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
            nan = torch.full((), float("nan"), device=zero.device)
            return {"loss": zero, "ce_copy1": nan, "ce_copy2": nan, "samples": torch.zeros((), device=zero.device)}
        out = diffusion_loss(self.lavida, batch, self.mode, self.visual, self.eps)
        return {"loss": out.loss, "ce_copy1": out.ce_copy1, "ce_copy2": out.ce_copy2,
                "samples": torch.tensor(float(out.samples), device=out.loss.device)}
