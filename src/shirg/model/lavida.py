"""LaViDa-LLaDA: SigLIP tower + MLP projector + LLaDA, with LaViDa's visual layouts and SHIRG's.

Module names reproduce LaViDa's checkpoint keys: ``model.transformer.*`` (LLaDA),
``model.vision_tower.vision_tower.vision_model.*``, ``model.mm_projector.{0,2}.*`` and
``model.image_newline``. SHIRG's own trained part (the coordinate embedding) lives outside
``model.`` under ``shirg.*`` and is saved separately, so released checkpoints load unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from transformers import SiglipVisionConfig

from shirg.errors import ConfigError
from shirg.model.answer import answer
from shirg.model.anyres import DEFAULT_PINPOINTS
from shirg.model.llada import LLaDAConfig, LLaDAModel
from shirg.tokens.coords import CoordinateEmbedding
from shirg.tokens.relevance_head import RelevanceHead
from shirg.vision.siglip import SO400M, VisionTower, vision_config_from_dict

DEFAULT_MAX_LENGTH = 4096


@dataclass
class LavidaConfig:
    """Everything config.json says about the model, parsed once.

    ``pool_views``: LaViDa's bilinear 27 -> 14 pooling after the projector (HD checkpoints);
    low-res / stage-1 checkpoints skip it. Read from ``mm_spatial_pool_mode`` (absent or "none"
    turns it off), never from environment variables.
    """

    llm: LLaDAConfig
    vision: SiglipVisionConfig
    mm_hidden_size: int
    image_aspect_ratio: str = "anyres"
    pinpoints: list[tuple[int, int]] = field(default_factory=list)
    pool_views: bool = True
    max_length: int = DEFAULT_MAX_LENGTH
    eot_token_id: int | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, cfg: dict[str, Any], vision_layers: int | None = None) -> LavidaConfig:
        vc = cfg.get("vision_config") or {}
        layers = vision_layers or vc.get("num_hidden_layers") or SO400M["num_hidden_layers"]
        vision = vision_config_from_dict(cfg, layers)
        mm_hidden = int(cfg.get("mm_hidden_size", vision.hidden_size))
        if mm_hidden != vision.hidden_size:
            raise ConfigError(f"mm_hidden_size {mm_hidden} differs from the vision width {vision.hidden_size}")
        projector = cfg.get("mm_projector_type", "mlp2x_gelu")
        if projector != "mlp2x_gelu":
            raise ConfigError(f"mm_projector_type {projector!r} is not supported; LaViDa uses 'mlp2x_gelu'")
        pool_mode = cfg.get("mm_spatial_pool_mode")
        pinpoints = [tuple(p) for p in cfg.get("image_grid_pinpoints") or DEFAULT_PINPOINTS]
        return cls(
            llm=LLaDAConfig.from_dict(cfg),
            vision=vision,
            mm_hidden_size=mm_hidden,
            image_aspect_ratio=cfg.get("image_aspect_ratio", "anyres"),
            pinpoints=pinpoints,
            pool_views=pool_mode not in (None, "none"),
            max_length=int(cfg.get("max_sequence_length", DEFAULT_MAX_LENGTH)),
            eot_token_id=cfg.get("eot_token_id"),
            raw=dict(cfg),
        )


class LavidaCore(LLaDAModel):
    """LLaDA plus LaViDa's vision modules; this is the ``model.`` of the checkpoint."""

    def __init__(self, config: LavidaConfig) -> None:
        super().__init__(config.llm)
        d = config.llm.d_model
        self.vision_tower = VisionTower(config.vision)
        self.mm_projector = nn.Sequential(nn.Linear(config.mm_hidden_size, d), nn.GELU(), nn.Linear(d, d))
        self.image_newline = nn.Parameter(torch.zeros(d))


class LavidaModel(nn.Module):
    """The whole model: ``model`` (LaViDa's weights) and ``shirg`` (SHIRG's own weights).

    Use :func:`shirg.load` to build it from a checkpoint folder, then :meth:`answer`.
    """

    def __init__(self, config: LavidaConfig, tokenizer: Any = None) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.model = LavidaCore(config)
        self.shirg = nn.ModuleDict({"coord_embed": CoordinateEmbedding(config.vision.hidden_size)})
        # a learned relevance head (shirg.tokens.relevance_head), loaded from an adapter folder or
        # attached by training; None = SHIRG's score as defined
        self.relevance_head: RelevanceHead | None = None

    @property
    def device(self) -> torch.device:
        return self.model.transformer["wte"].weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.transformer["wte"].weight.dtype

    def project(self, features: Tensor) -> Tensor:
        """Vision features [..., D] -> LLM embedding space [..., d] (LaViDa's mm_projector)."""
        return self.model.mm_projector(features.to(self.dtype))

    def answer(self, images, questions, **kwargs):
        """Answer questions about images; see :func:`shirg.model.answer.answer`."""
        return answer(self, images, questions, **kwargs)
