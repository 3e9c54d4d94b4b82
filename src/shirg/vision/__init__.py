"""The vision tower and what feeds it: SigLIP in LaViDa's key layout (``siglip.py``), image loading,
limits and canvas preparation (``preprocess.py``), one pass to dual-scale tokens (``encode.py``) and
selection overlays (``overlay.py``)."""

from shirg.vision.encode import encode_dual_scale
from shirg.vision.overlay import draw_overlay
from shirg.vision.preprocess import PATCH, PreparedImage, check_resolution, load_image, prepare_image
from shirg.vision.siglip import VisionTower

__all__ = ["PATCH", "PreparedImage", "VisionTower", "check_resolution", "draw_overlay", "encode_dual_scale",
           "load_image", "prepare_image"]
