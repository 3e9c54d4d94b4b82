"""SigLIP vision tower in LaViDa's convention.

LaViDa drops the last of SigLIP so400m's 27 encoder layers and reads the residual stream after
layer 26, before ``post_layernorm``; the pooling head is unused. We build transformers'
``SiglipVisionModel`` with the layers that remain and stop before the post-LN. Other resolutions
(a multiple of 14) interpolate the 27 x 27 position table bicubically (transformers'
``interpolate_pos_encoding``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import SiglipVisionConfig, SiglipVisionModel

from shirg.checkpoint import check_state_dict, key_index, load_tensors, read_config, tensor_shapes
from shirg.errors import CheckpointError, ConfigError, resolve_device
from shirg.vision.preprocess import PATCH

LAVIDA_VISION_PREFIX = "model.vision_tower.vision_tower.vision_model."
SIGLIP_PREFIX = "vision_model."
BARE_PREFIX = "embeddings.patch_embedding."  # SiglipVisionModel.save_pretrained in transformers 5.x
LAVIDA_LAYERS = 26

# google/siglip-so400m-patch14-384, as LaViDa uses it (26 of its 27 layers).
SO400M = dict(
    hidden_size=1152,
    intermediate_size=4304,
    num_hidden_layers=LAVIDA_LAYERS,
    num_attention_heads=16,
    image_size=384,
    patch_size=14,
    layer_norm_eps=1e-6,
    hidden_act="gelu_pytorch_tanh",
)


def vision_config(**overrides) -> SiglipVisionConfig:
    return SiglipVisionConfig(**{**SO400M, **overrides, "vision_use_head": False})


class VisionTower(nn.Module):
    """SigLIP features before post-LN. ``forward(pixels [B, 3, R, R]) -> [B, (R/14)^2, D]``.

    Module names reproduce LaViDa's key path: inside LaViDa this module is ``vision_tower`` and
    its tensors are ``vision_tower.vision_tower.vision_model.*``.
    """

    def __init__(self, config: SiglipVisionConfig) -> None:
        super().__init__()
        self.config = config
        self.vision_tower = nn.Module()
        self.vision_tower.vision_model = SiglipVisionModel(config)

    @property
    def vision_model(self) -> SiglipVisionModel:
        return self.vision_tower.vision_model

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def rebuild_buffers(self, device: str | torch.device | None = None) -> None:
        """Recreate the non-persistent position ids, which checkpoints do not hold: after building on
        meta they are still meta tensors. ``device`` defaults to the position table's device."""
        emb = self.vision_model.embeddings
        if device is None:
            device = emb.position_embedding.weight.device
        emb.position_ids = torch.arange(emb.num_positions, device=device).expand((1, -1))

    def forward(self, pixels: Tensor) -> Tensor:
        if pixels.dim() != 4 or pixels.shape[1] != 3 or pixels.shape[-1] != pixels.shape[-2]:
            raise ConfigError(f"pixels must be [B, 3, R, R], got {tuple(pixels.shape)}")
        if pixels.shape[-1] % PATCH and pixels.shape[-1] != self.config.image_size:
            raise ConfigError(
                f"resolution {pixels.shape[-1]} is neither the native {self.config.image_size} "
                f"nor a multiple of {PATCH}"
            )
        m = self.vision_model
        dtype = m.embeddings.patch_embedding.weight.dtype
        interpolate = pixels.shape[-1] != self.config.image_size
        x = m.embeddings(pixels.to(dtype), interpolate_pos_encoding=interpolate)
        return m.encoder(inputs_embeds=x).last_hidden_state


def vision_config_from_dict(cfg: dict, num_layers: int) -> SiglipVisionConfig:
    """Vision config from a LaViDa config.json (``vision_config`` if present, else so400m) or a SigLIP one."""
    vc = cfg.get("vision_config") or {}
    if cfg.get("model_type") == "siglip_vision_model":
        vc = cfg
    keys = set(SO400M) - {"num_hidden_layers"}
    fields = {k: vc[k] for k in keys if k in vc}
    return vision_config(**fields, num_hidden_layers=num_layers)


def tower_config_from_folder(folder: str | Path) -> dict | None:
    """The vision fields of a local SigLIP folder's config.json (a full SigLIP config's
    ``vision_config``, or a ``siglip_vision_model`` config itself); None when there is no such folder.

    LaViDa builds its tower from the folder ``mm_vision_tower`` names, so a checkpoint whose
    config.json has no ``vision_config`` gets its tower shape from there.
    """
    path = Path(folder) / "config.json"
    if not path.is_file():
        return None
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path} (the mm_vision_tower folder's config) is not valid JSON: {e}") from e
    if not isinstance(cfg, dict):
        return None
    if cfg.get("model_type") == "siglip_vision_model":
        return cfg
    vc = cfg.get("vision_config")
    return vc if isinstance(vc, dict) else None


def layer_count(names: Iterable[str], prefix: str) -> int:
    """Number of encoder layers among tensor ``names`` under ``prefix`` (0 when none)."""
    ids = {int(n[len(prefix) :].split(".")[2]) for n in names if n.startswith(prefix + "encoder.layers.")}
    return max(ids) + 1 if ids else 0


def load_vision_tower(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> VisionTower:
    """Load the tower from a LaViDa checkpoint folder (its vision keys) or a local SigLIP folder.

    A standalone SigLIP folder loses its last layer (LaViDa's convention: so400m's 27 -> 26) and ignores the
    text tower, the pooling head and ``logit_*``. Missing, unexpected or mis-shaped vision tensors
    raise CheckpointError naming them.
    """
    device = resolve_device(device)
    folder = Path(path)
    cfg = read_config(folder)
    index = key_index(folder)
    names = list(index)
    if any(n.startswith(LAVIDA_VISION_PREFIX) for n in names):
        prefix = LAVIDA_VISION_PREFIX
        num_layers = layer_count(names, prefix)
        wanted = [n for n in names if n.startswith(prefix)]
    elif any(n.startswith(SIGLIP_PREFIX) for n in names) or any(n.startswith(BARE_PREFIX) for n in names):
        # hub-style SigLIP ("vision_model." + "text_model.") or transformers 5.x
        # SiglipVisionModel.save_pretrained (vision keys with no prefix at all)
        prefix = SIGLIP_PREFIX if any(n.startswith(SIGLIP_PREFIX) for n in names) else ""
        num_layers = layer_count(names, prefix) - 1  # LaViDa deletes the last layer
        wanted = [
            n
            for n in names
            if n.startswith(prefix)
            and not n.startswith(prefix + "head.")
            and not (
                n.startswith(prefix + "encoder.layers.") and int(n[len(prefix) :].split(".")[2]) >= num_layers
            )
        ]
    else:
        raise CheckpointError(
            f"{folder} holds no vision tower tensors (looked for names starting with "
            f"{LAVIDA_VISION_PREFIX!r}, {SIGLIP_PREFIX!r} or {BARE_PREFIX!r}); pass a LaViDa or SigLIP checkpoint "
            "folder"
        )
    if num_layers == 0:
        raise CheckpointError(f"{folder}: no encoder layers found under {prefix!r}")
    config = vision_config_from_dict(cfg, num_layers)
    with torch.device("meta"):
        tower = VisionTower(config)
    expected = {k: v.shape for k, v in tower.vision_model.state_dict().items()}
    found = {n[len(prefix) :]: s for n, s in tensor_shapes(index, wanted).items()}
    check_state_dict(expected, found, "vision tower", folder)
    state = load_tensors(index, wanted, rename=lambda n: n[len(prefix) :], dtype=dtype)
    tower.vision_model.load_state_dict(state, strict=True, assign=True)
    tower.rebuild_buffers("cpu")
    return tower.to(device).eval()
