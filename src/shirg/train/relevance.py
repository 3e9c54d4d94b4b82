"""Training the gate's relevance: a listwise loss from the full-resolution model (or from boxes).

The targets, per training sample, are distributions over the G x G high-detail tokens:

- ``distilled`` (the main target, no labels needed): gradient x input of the full-resolution model.
  The model answers from every high-detail token (``full``); the answer loss (LaViDa's
  complementary-masking loss, :mod:`shirg.train.loss`) is differentiated with respect to the
  projected visual tokens v_i, and token i's relevance is |<dL/dv_i, v_i>| (``attribution: abs``,
  any influence on the answer) or max(0, -<dL/dv_i, v_i>) (``support``: to first order, how much
  the loss would rise without token i, so a look-alike that pulls toward a wrong answer gets
  nothing), normalised to sum 1. The same recipe applies to LaViDa-8B on ChartQA / DocVQA: it needs
  only (image, question, answer).
- ``box`` (ablation / upper bound on EntityGrid): uniform over the patches of the queried entities'
  boxes (a patch belongs to a box when its centre lies inside; a box too small for any centre takes
  the patch under its own centre).

The loss is KL(target || softmax(score / tau)) averaged over the batch, where ``score`` is SHIRG's
combined score with the head's term (:func:`shirg.tokens.relevance_head.learned_scores`), i.e. what
the selection ranks by. Only the head receives gradients from it; :func:`combined_loss` adds it to
the answer loss with a weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from shirg.errors import ConfigError
from shirg.model.lavida import LavidaModel
from shirg.model.options import VisualOptions
from shirg.model.visual import hires_selection, patch_size, question_context, splice
from shirg.options import ATTRIBUTIONS, ShirgOptions
from shirg.tokens.relevance_head import RelevanceHead, learned_scores
from shirg.tokens.types import KIND_HI
from shirg.train.data import Batch
from shirg.train.loss import LossModule, as_visual_options, complementary_masks, denoise_logits, diffusion_loss
from shirg.vision.encode import encode_dual_scale
from shirg.vision.preprocess import prepare_image

TARGETS = ("none", "distilled", "box")


def check_attribution(attribution: str) -> None:
    """A one-line error unless ``attribution`` is one of :data:`shirg.options.ATTRIBUTIONS`."""
    if attribution not in ATTRIBUTIONS:
        raise ConfigError(f"relevance attribution {attribution!r} is not one of {', '.join(ATTRIBUTIONS)}")


@dataclass
class RelevanceObjective:
    """The training-objective option: ``target`` none | distilled | box, its ``weight`` next to the
    answer loss, the softmax temperature ``tau`` of the listwise loss and, for ``distilled``, the
    ``attribution`` it keeps (``abs`` or ``support``)."""

    target: str = "none"
    weight: float = 0.1
    tau: float = 1.0
    attribution: str = "abs"

    def validate(self) -> None:
        if self.target not in TARGETS:
            raise ConfigError(f"relevance target {self.target!r} is not one of {', '.join(TARGETS)}")
        check_attribution(self.attribution)
        if self.weight < 0 or self.tau <= 0:
            raise ConfigError(f"relevance weight {self.weight} must be >= 0 and tau {self.tau} > 0")


def listwise_kl(score: Tensor, target: Tensor, mask: Tensor | None = None, tau: float = 1.0) -> Tensor:
    """Mean over the batch of KL(target || softmax(score / tau)) over the tokens where ``mask`` holds.
    score, target: [B, N] (target rows sum to 1 over the mask)."""
    if mask is None:
        mask = torch.ones_like(score, dtype=torch.bool)
    logp = F.log_softmax((score / tau).masked_fill(~mask, float("-inf")), dim=-1)
    t = target * mask
    kl = torch.where(t > 0, t * (torch.log(t.clamp(min=1e-30)) - logp), torch.zeros_like(t))
    return kl.sum(dim=-1).mean()


def box_target(boxes_px: Sequence[Sequence[Sequence[float]]], image_sizes: Sequence[tuple[int, int]],
               content_boxes: Sequence[Sequence[float]], grid: int) -> Tensor:
    """[B, G*G] uniform distributions over the patches of each sample's boxes (image pixels)."""
    ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    cx, cy = ((xs.flatten() + 0.5) / grid), ((ys.flatten() + 0.5) / grid)
    rows = []
    for boxes, (w, h), (c0, d0, c1, d1) in zip(boxes_px, image_sizes, content_boxes, strict=True):
        m = torch.zeros(grid * grid, dtype=torch.bool)
        for x0, y0, x1, y1 in boxes:
            u0, u1 = c0 + x0 / w * (c1 - c0), c0 + x1 / w * (c1 - c0)
            v0, v1 = d0 + y0 / h * (d1 - d0), d0 + y1 / h * (d1 - d0)
            inside = (cx >= u0) & (cx <= u1) & (cy >= v0) & (cy <= v1)
            if not inside.any():
                col = min(grid - 1, max(0, int((u0 + u1) / 2 * grid)))
                row = min(grid - 1, max(0, int((v0 + v1) / 2 * grid)))
                inside[row * grid + col] = True
            m |= inside
        if not m.any():
            raise ConfigError("a box target needs at least one box per sample")
        rows.append(m.float() / m.sum())
    return torch.stack(rows)


def _answer_loss_from_blocks(model: LavidaModel, batch: Batch, blocks: list[Tensor], eps: float = 1e-3) -> Tensor:
    """LaViDa's complementary-masking loss with the given visual blocks (as :func:`diffusion_loss`)."""
    vocab = model.config.llm.vocab_size
    prefix, prefix_mask = splice(model, batch.prompt_ids, blocks)
    answer = batch.answer_ids.to(prefix.device)
    mask1 = complementary_masks(batch.noise_seeds, answer.shape[1], eps).to(prefix.device)
    masks = torch.cat([mask1, ~mask1])
    targets = answer.repeat(2, 1)
    noisy = targets.masked_fill(masks, model.config.llm.mask_token_id)
    logits = denoise_logits(model, prefix.repeat(2, 1, 1), prefix_mask.repeat(2, 1), noisy)
    ce = F.cross_entropy(logits.float().reshape(-1, vocab), targets.reshape(-1), reduction="none")
    return (ce.view_as(masks.float()) * masks).sum() / masks.sum()


def token_attribution(grad: Tensor, value: Tensor, attribution: str = "abs") -> Tensor:
    """[N] per-token gradient x input <grad_i, value_i> of [N, D] tensors: its magnitude (``abs``) or
    max(0, -<grad_i, value_i>) (``support``: to first order, what removing token i adds to the loss)."""
    check_attribution(attribution)
    gx = (grad.float() * value.detach().float()).sum(-1)
    return gx.abs() if attribution == "abs" else (-gx).clamp(min=0)


def distilled_target(model: LavidaModel, batch: Batch, resolution: int, attribution: str = "abs") -> Tensor:
    """[B, G*G] gradient x input relevance of the full-resolution model's answer loss (no parameter
    receives a gradient: only the visual blocks are differentiated): its magnitude (``abs``) or the
    part that lowers the loss (``support``). A row with nothing to keep is uniform."""
    check_attribution(attribution)  # before the full-resolution pass
    opts = VisualOptions(resolution=resolution)
    with torch.no_grad():
        blocks, sel, _ = hires_selection(model, batch.images, batch.questions, "full", opts)
    leaves = [b.detach().float().to(model.dtype).requires_grad_(True) for b in blocks]
    with torch.enable_grad():
        loss = _answer_loss_from_blocks(model, batch, leaves)
        grads = torch.autograd.grad(loss, leaves)
    grid = resolution // patch_size(model)
    out = torch.zeros(len(blocks), grid * grid)
    for i, (g, v) in enumerate(zip(grads, leaves, strict=True)):
        rel = token_attribution(g, v, attribution).cpu()
        hi = (sel.kind[i] == KIND_HI).cpu()
        out[i, sel.index[i].cpu()[hi]] = rel[hi]
    total = out.sum(dim=1, keepdim=True)
    uniform = torch.full_like(out, 1.0 / out.shape[1])
    return torch.where(total > 0, out / total.clamp(min=1e-30), uniform)


def relevance_loss(model: LavidaModel, head: RelevanceHead, batch: Batch, target: Tensor, resolution: int,
                   tau: float = 1.0, options: ShirgOptions | None = None) -> Tensor:
    """KL(target || softmax(SHIRG score with the head / tau)) on the batch's images at ``resolution``,
    the score computed with ``options``' weights, score source, question pooling and text stride
    (default SHIRG's)."""
    opts = options or ShirgOptions()
    with torch.no_grad():
        tokens, _ = encode_dual_scale(model.model.vision_tower, batch.images, resolution, "pad")
        text = question_context(model, batch.questions)
    terms = learned_scores(tokens, text, head, opts.weights, opts.source, opts.text_pool, opts.sim_stride)
    return listwise_kl(terms.score, target.to(terms.score.device), tokens.hi_real, tau)


def combined_loss(model: LavidaModel, head: RelevanceHead | None, batch: Batch, mode: str, visual: dict,
                  objective: RelevanceObjective, resolution: int, boxes: Sequence | None = None) -> dict[str, Tensor]:
    """The answer loss of ``mode`` plus ``objective.weight`` x the relevance loss (``distilled`` or
    ``box``; ``boxes`` = (boxes_px, image_sizes) per sample for ``box``)."""
    objective.validate()
    answer = diffusion_loss(model, batch, mode, visual).loss
    if objective.target == "none" or head is None:
        return {"loss": answer, "answer": answer.detach(), "relevance": torch.zeros(())}
    if objective.target == "distilled":
        target = distilled_target(model, batch, resolution, objective.attribution)
    else:
        if boxes is None:
            raise ConfigError("the box relevance target needs the queried entities' boxes")
        with_boxes = replace(batch, boxes=list(zip(boxes[0], boxes[1], strict=True)))
        target = batch_box_target(with_boxes, resolution, resolution // patch_size(model))
    rel = relevance_loss(model, head, batch, target, resolution, objective.tau,
                         as_visual_options(visual).shirg_options())
    return {"loss": answer + objective.weight * rel, "answer": answer.detach(), "relevance": rel.detach()}


def batch_box_target(batch: Batch, resolution: int, grid: int) -> Tensor:
    """:func:`box_target` of a training batch whose samples carry evidence boxes (``Batch.boxes``)."""
    if batch.boxes is None or any(b is None for b in batch.boxes):
        raise ConfigError("the box relevance target needs every training record to carry its evidence 'boxes' "
                          "(shirg entitygrid writes them into llava_train.json)")
    contents = [prepare_image(img, resolution, "pad").content_box for img in batch.images]
    return box_target([b[0] for b in batch.boxes], [b[1] for b in batch.boxes], contents, grid)


class RelevanceLossModule(LossModule):
    """``shirg train`` with ``data.relevance``: the answer loss plus ``weight`` x the relevance loss of
    the model's ``relevance_head`` (``distilled`` target, or ``box`` when the records carry evidence
    boxes), each resolution group of the batch scored at its own resolution. Outputs also
    ``relevance`` (the KL, a metric)."""

    def __init__(self, net, mode: str, visual, eps: float, objective: RelevanceObjective) -> None:
        super().__init__(net, mode, visual, eps)
        objective.validate()
        if objective.target not in ("distilled", "box"):
            raise ConfigError(f"shirg train's relevance target must be distilled or box, got {objective.target!r}")
        self.objective = objective

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        out = super().forward(batch)
        head = self.lavida.relevance_head
        if len(batch) == 0 or head is None:
            return {**out, "relevance": torch.full((), float("nan"), device=out["loss"].device)}
        rels, weights = [], []
        for r in sorted(set(batch.resolutions)):
            idx = [i for i, ri in enumerate(batch.resolutions) if ri == r]
            sub = replace(batch, images=[batch.images[i] for i in idx], questions=[batch.questions[i] for i in idx],
                          prompt_ids=[batch.prompt_ids[i] for i in idx], answer_ids=batch.answer_ids[idx],
                          resolutions=[r] * len(idx), noise_seeds=[batch.noise_seeds[i] for i in idx],
                          modes=None, ks=None, boxes=[batch.boxes[i] for i in idx] if batch.boxes is not None else None)
            if self.objective.target == "box":
                target = batch_box_target(sub, r, r // patch_size(self.lavida))
            else:
                target = distilled_target(self.lavida, sub, r, self.objective.attribution)
            rels.append(relevance_loss(self.lavida, head, sub, target, r, self.objective.tau,
                                       self.visual.shirg_options()))
            weights.append(len(idx) / len(batch))
        rel = sum(w * x for w, x in zip(weights, rels, strict=True))
        return {**out, "loss": out["loss"] + self.objective.weight * rel.to(out["loss"].device),
                "relevance": rel.detach()}
