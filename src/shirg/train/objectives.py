"""Training objectives: one object each, building its dataset, the module accelerate wraps (which
computes the loss in ``forward``) and the collate function of its batches.

- ``answer``: LaViDa's complementary-masking diffusion loss on LLaVA records (:mod:`shirg.train.loss`),
  plus, with ``data.relevance``, a learned relevance head's listwise loss (:mod:`shirg.train.relevance`).
- ``patch_labels``: stage 0 of a tower trained from scratch, each patch's colour / shape / number on
  EntityGrid scenes (:mod:`shirg.train.patch_labels`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from shirg.errors import ConfigError
from shirg.model.adapter import head_widths
from shirg.model.lavida import LavidaModel
from shirg.model.visual import patch_size
from shirg.tokens.relevance_head import RelevanceHead
from shirg.train.config import TrainConfig
from shirg.train.data import TrainDataset, collate, load_mixture, load_sources, snap_resolution
from shirg.train.loss import LossModule
from shirg.train.patch_labels import (
    PatchAuxLossModule,
    PatchLabelDataset,
    PatchLabelModule,
    PatchTargets,
    collate_patches,
    load_scenes,
    make_head,
    scenes_of,
)
from shirg.train.relevance import RelevanceLossModule, RelevanceObjective


class AnswerObjective:
    """The masked-diffusion answer loss: samples from ``data.mixture`` or ``data.sources``."""

    collate: Callable[[list], Any] = staticmethod(collate)

    def build(self, cfg: TrainConfig, lavida: LavidaModel, tm: Any, device: torch.device,
              modes: list[str]) -> tuple[list, torch.utils.data.Dataset, nn.Module]:
        if cfg.data.mixture:
            samples = load_mixture(cfg.data.mixture, seed=cfg.run.seed)
        else:
            samples = load_sources(cfg.data.sources, ".", cfg.run.seed)
        if not samples:
            raise ConfigError("the training data is empty: set data.mixture or data.sources")
        tok = lavida.tokenizer
        eot = lavida.config.eot_token_id
        if eot is None:
            eot_guess = tok.convert_tokens_to_ids("<|eot_id|>")
            eot = eot_guess if isinstance(eot_guess, int) and eot_guess >= 0 else None
        dataset = TrainDataset(samples, tok, answer_length=cfg.data.answer_length,
                               eos_id=lavida.config.llm.eos_token_id,
                               eot_id=eot if cfg.data.end_with_eot else None,
                               resolutions=cfg.data.resolutions, snap=cfg.data.snap, seed=cfg.run.seed,
                               modes=modes, budgets=cfg.data.budgets)
        rel = cfg.data.relevance
        answer = LossModule(tm.module, modes[0], cfg.data.visual, cfg.data.mask_eps)
        aux = cfg.data.patch_aux
        if aux.weight > 0:
            # the head lives on the LavidaModel like stage 0's (checkpoints and resume hold it) but outside
            # model.model, so neither the LaViDa checkpoint written at the end nor `shirg export` keeps it
            scenes = scenes_of([s.image for s in samples])
            dataset.patch_targets = PatchTargets(scenes, aux.heads, patch_size(lavida), cfg.data.patch_number)
            max_label = max((int(e["label"]) for s in scenes for e in s.scene), default=0)
            cells = dataset.patch_targets.max_cells
            lavida.patch_head = make_head(lavida.config.llm.d_model, max_label, cells).to(device)
            return samples, dataset, PatchAuxLossModule(answer, lavida.patch_head, max_label, aux.heads, aux.weight,
                                                        cells)
        if rel.target == "none":
            return samples, dataset, answer
        if rel.target == "box":
            missing = sum(s.boxes is None for s in samples)
            if missing:
                raise ConfigError(f"data.relevance.target box: {missing} of {len(samples)} training samples carry no "
                                  "evidence 'boxes' in their records (shirg entitygrid writes them)")
        # the head lives on the LavidaModel (checkpoints and resume hold it, the adapter folder gets it)
        # but outside model.model, so a LaViDa checkpoint written at the end does not
        token_dim, text_dim = head_widths(lavida, rel.reads)
        lavida.relevance_head = RelevanceHead(token_dim, rel.rank, seed=cfg.run.seed, text_dim=text_dim,
                                              reads=rel.reads, pool=rel.pool).to(device)
        objective = RelevanceObjective(target=rel.target, weight=rel.weight, tau=rel.tau, attribution=rel.attribution)
        return samples, dataset, RelevanceLossModule(tm.module, modes[0], cfg.data.visual, cfg.data.mask_eps,
                                                     objective)


class PatchLabelObjective:
    """Per-patch labels for the tower alone: samples are the scenes of ``data.entitygrid``."""

    collate: Callable[[list], Any] = staticmethod(collate_patches)

    def build(self, cfg: TrainConfig, lavida: LavidaModel, tm: Any, device: torch.device,
              modes: list[str]) -> tuple[list, torch.utils.data.Dataset, nn.Module]:
        samples, max_label = load_scenes(cfg.data.entitygrid)
        dataset = PatchLabelDataset(samples, snap_resolution(cfg.data.resolutions[0], cfg.data.snap),
                                    lavida.config.vision.image_size, number_on=cfg.data.patch_number)
        # the head lives on the LavidaModel (so checkpoints and resume hold it) but outside
        # model.model, so the LaViDa checkpoint written at the end does not
        lavida.patch_head = make_head(lavida.config.vision.hidden_size, max_label).to(device)
        return samples, dataset, PatchLabelModule(lavida, lavida.patch_head, max_label)


OBJECTIVES: dict[str, type] = {"answer": AnswerObjective, "patch_labels": PatchLabelObjective}
