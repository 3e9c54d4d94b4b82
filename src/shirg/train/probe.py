"""Does a model use the image? Per-answer-slot loss with the true images against other samples' images.

A model trained from scratch first learns the answers' priors; whether (and for which answer slot) it
has started to read the image shows as a gap between the cross-entropy with each sample's own image
and with the next sample's image (images rolled by one over the probed set). Every answer slot is
masked, as at the sampler's first step, so the numbers are deterministic and comparable across
checkpoints. Used by ``shirg image-use`` (docs/small.md reports the small model's probes with it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from shirg.errors import ConfigError
from shirg.model.lavida import LavidaModel
from shirg.model.visual import splice
from shirg.train.data import Sample, TrainDataset, collate
from shirg.train.loss import denoise_logits, visual_blocks


@torch.no_grad()
def slot_losses(model: LavidaModel, batch, mode: str, visual: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(cross-entropy [B, La], argmax hit [B, La]) of every answer slot with all slots masked."""
    blocks = visual_blocks(model, batch, mode, visual)
    prefix, prefix_mask = splice(model, batch.prompt_ids, blocks)
    answer = batch.answer_ids.to(prefix.device)
    noisy = torch.full_like(answer, model.config.llm.mask_token_id)
    logits = denoise_logits(model, prefix, prefix_mask, noisy).float()
    ce = F.cross_entropy(logits.flatten(0, 1), answer.reshape(-1), reduction="none").view_as(answer)
    return ce, (logits.argmax(-1) == answer).float()


def image_use(model: LavidaModel, samples: Sequence[Sample], *, mode: str, slots: int = 8,
              resolution: int = 336, batch_size: int = 16, visual: dict | None = None,
              progress: bool = False) -> dict:
    """Per-slot mean cross-entropy and accuracy over ``samples`` with their own images ("true") and
    with sample i given sample i+1's image ("rolled", the last gets the first's)."""
    if len(samples) < 2:
        raise ConfigError(f"image-use needs at least 2 samples to roll the images, got {len(samples)}")
    if slots < 2:
        raise ConfigError(f"--slots must be >= 2 (the answer and its end token), got {slots}")
    ds = TrainDataset(samples, model.tokenizer, answer_length=slots, eos_id=model.config.llm.eos_token_id,
                      eot_id=model.config.eot_token_id, resolutions=[resolution], snap=0, seed=0)
    items = [ds[(0, i)] for i in range(len(samples))]
    bad = [samples[i].image for i, x in enumerate(items) if "skip" in x]
    if bad:
        raise ConfigError(f"unreadable image(s): {', '.join(map(str, bad[:3]))}; fix or drop those records")
    rolled_images = [x["image"] for x in items[1:] + items[:1]]
    sums = {k: torch.zeros(slots) for k in ("ce_true", "ce_rolled", "acc_true", "acc_rolled")}
    starts = range(0, len(items), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc=f"image-use {mode}", unit="batch")
    for b0 in starts:
        batch = collate(items[b0:b0 + batch_size])
        for which, images in (("true", batch.images), ("rolled", rolled_images[b0:b0 + len(batch)])):
            batch.images = images
            ce, hit = slot_losses(model, batch, mode, visual)
            sums[f"ce_{which}"] += ce.sum(0).cpu()
            sums[f"acc_{which}"] += hit.sum(0).cpu()
    n = len(items)
    out = {k: [v / n for v in t.tolist()] for k, t in sums.items()}
    out.update(n=n, mode=mode, slots=slots, resolution=resolution,
               mean_ce_true=sum(out["ce_true"]) / slots, mean_ce_rolled=sum(out["ce_rolled"]) / slots)
    return out
