"""Stage 0 for a tower trained from scratch: predict each patch's colour, shape and number.

LaViDa's SigLIP tower arrives pretrained; the small model's starts random and, trained only through
the answer loss, learnt colour and (slowly) shape but never the digits (docs/small.md). This
objective gives it a head start on the same generated scenes: EntityGrid knows where every entity
and number is, so each patch of the tower's output grid gets three targets -- the colour and the
shape of the entity covering most of it (or background), and the number whose centre lies in it
(or none; ``data.patch_number: entity`` puts it on every patch of its entity) -- predicted by one
linear head on the features the projector reads. The head is thrown away; the model written at the
end is the LaViDa checkpoint with the new tower.

Every image is seen in both of the views the VLM uses: the whole image at the high-detail canvas
(``full``/``shirg``: R x R with interpolated positions) and LaViDa's low-resolution view (the
tower's native size). The number is supervised in both, so the logged per-view number accuracy
shows how legible the digits are at each resolution.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import Tensor, nn

from shirg.entitygrid import COLOURS, QUESTIONS_FILE, SHAPES, draw_shape, label_font
from shirg.errors import ConfigError, ImageError
from shirg.model.anyres import expand2square
from shirg.train.data import Batch
from shirg.train.loss import LossModule, diffusion_loss, visual_blocks
from shirg.vision.preprocess import load_image, to_tensor

COLOUR_CLASSES = ("none", *sorted(COLOURS))
SHAPE_CLASSES = ("none", *SHAPES)
HEADS = ("colour", "shape", "number")
CELL_HEADS = ("row", "column")  # data.patch_aux only: the grid row / column (from 1) of the entity covering a patch
AUX_HEADS = (*HEADS, *CELL_HEADS)  # every head data.patch_aux may name, in make_head's logit order
COVER = 0.25  # a patch takes an entity's colour/shape when the shape covers at least this share of it
VIEWS = ("full", "lowres")
_FIELDS = ("rows", "cols", "size", "entity_scale", "label_px", "max_label")  # label_place: "under" if absent


@dataclass
class SceneImage:
    image: Path
    scene: list[dict]
    grid: tuple[int, int]  # rows, cols
    size: int
    entity_scale: float
    label_px: int
    label_place: str


def load_scenes(folders: Sequence[str | Path]) -> tuple[list[SceneImage], int]:
    """Every distinct image of the EntityGrid folders (``shirg entitygrid --out``), with its scene,
    and the largest number any of them may hold (the number head's size less one)."""
    if not folders:
        raise ConfigError("data.objective patch_labels needs data.entitygrid: a list of `shirg entitygrid` "
                          "output folders")
    scenes: list[SceneImage] = []
    max_label = 0
    for folder in folders:
        root = Path(folder)
        meta_file, q_file = root / "entitygrid.json", root / QUESTIONS_FILE
        if not meta_file.is_file() or not q_file.is_file():
            raise ConfigError(f"{root} is not a `shirg entitygrid` folder (needs entitygrid.json and "
                              f"{QUESTIONS_FILE}); make one with `shirg entitygrid --out {root}`")
        cfg = json.loads(meta_file.read_text())["config"]
        missing = [k for k in _FIELDS if k not in cfg]
        if missing:
            raise ConfigError(f"{meta_file}: config lacks {missing}; regenerate the folder with this shirg")
        max_label = max(max_label, int(cfg["max_label"]))
        seen: set[str] = set()
        for line in q_file.read_text().splitlines():
            if not line.strip():
                continue
            r = json.loads(line)
            if r["image"] in seen:
                continue
            seen.add(r["image"])
            scenes.append(SceneImage(image=root / r["image"], scene=r["scene"],
                                     grid=(int(cfg["rows"]), int(cfg["cols"])), size=int(cfg["size"]),
                                     entity_scale=float(cfg["entity_scale"]), label_px=int(cfg["label_px"]),
                                     label_place=cfg.get("label_place", "under")))
    if not scenes:
        raise ConfigError(f"no images in {', '.join(map(str, folders))}")
    return scenes, max_label


def entity_geometry(s: SceneImage, e: dict) -> tuple[float, float, float, tuple[float, float]]:
    """(cx, cy, radius, number centre) of one entity, recovered from its box as the renderer drew it
    (``render_scene``: the box spans the shape, and the number below it when it is drawn under)."""
    rows, cols = s.grid
    radius = s.entity_scale * min(s.size / cols, s.size / rows) / 2
    x0, y0, x1, y1 = e["box"]
    # box = [floor(cx - r), floor(cy - r), ceil(cx + r), ceil(...)]: each floor/ceil pins the centre to
    # a 1-px interval; the middle of their intersection is within half a pixel of the drawn centre
    cx = (max(x0 + radius, x1 - radius - 1) + min(x0 + radius + 1, x1 - radius)) / 2
    if s.label_place == "inside":  # the box's bottom is the shape's too
        cy = (max(y0 + radius, y1 - radius - 1) + min(y0 + radius + 1, y1 - radius)) / 2
        return cx, cy, radius, (cx, cy)
    cy = y0 + radius + 0.5
    x0, y0, x1, y1 = label_font(s.label_px).getbbox(str(e["label"]))  # the glyph, drawn 3 px under the shape
    return cx, cy, radius, (cx, cy + radius + 3 + (y1 - y0) / 2)


NUMBER_ON = ("centre", "entity")


def patch_targets(s: SceneImage, grid: int, number_on: str = "centre",
                  owned: tuple[np.ndarray, list[tuple[float, float]]] | None = None) -> np.ndarray:
    """[3, grid * grid] int64 targets (colour, shape, number class; 0 = none) of a ``grid`` x ``grid``
    patch layout over the whole (square) image, row-major as the tower emits its tokens.

    ``number_on``: the patch holding the number's centre gets the number ("centre"), or every patch
    of its entity does as well ("entity": the tower must spread what one patch shows over the whole
    shape, so the number is as widespread in the visual tokens as the colour). ``owned``: what
    :func:`patch_owners` gives for this scene and grid, when the caller has it already."""
    if number_on not in NUMBER_ON:
        raise ConfigError(f"number_on {number_on!r}: choose one of {', '.join(NUMBER_ON)}")
    owners, centres = owned if owned is not None else patch_owners(s, grid)
    out = np.zeros((3, grid, grid), dtype=np.int64)
    for i, j in zip(*np.nonzero(owners >= 0), strict=True):
        e = s.scene[owners[i, j]]
        out[0, i, j] = COLOUR_CLASSES.index(e["colour"])
        out[1, i, j] = SHAPE_CLASSES.index(e["shape"])
        if number_on == "entity":
            out[2, i, j] = int(e["label"])
    size = s.size
    for e, (x, y) in zip(s.scene, centres, strict=True):
        i = min(grid - 1, max(0, int(y * grid / size)))
        j = min(grid - 1, max(0, int(x * grid / size)))
        out[2, i, j] = int(e["label"])
    return out.reshape(3, grid * grid)


def patch_owners(s: SceneImage, grid: int) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """[grid, grid] index of the entity whose shape covers at least ``COVER`` of each patch (the most-covering
    one; -1 for none), and each entity's number centre."""
    size = s.size
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    centres = []
    for k, e in enumerate(s.scene):
        cx, cy, r, centre = entity_geometry(s, e)
        draw_shape(draw, e["shape"], cx, cy, r, k + 1)
        centres.append(centre)
    m = np.asarray(mask)
    # share of each patch covered by each entity (patch edges rounded to whole pixels)
    edges = np.round(np.linspace(0, size, grid + 1)).astype(int)
    owners = np.full((grid, grid), -1, dtype=np.int64)
    n = len(s.scene)
    for i in range(grid):
        for j in range(grid):
            cell = m[edges[i] : edges[i + 1], edges[j] : edges[j + 1]]
            counts = np.bincount(cell.ravel(), minlength=n + 1)[1:]
            if counts.size and counts.max() >= COVER * cell.size:
                owners[i, j] = int(counts.argmax())
    return owners, centres


def cell_targets(s: SceneImage, owners: np.ndarray) -> np.ndarray:
    """[2, grid * grid] int64 targets (grid row, grid column of the covering entity, from 1; 0 = none) of the
    patches :func:`patch_targets` gives a colour and a shape, row-major; ``owners``: :func:`patch_owners`'s."""
    grid = owners.shape[0]
    out = np.zeros((2, grid, grid), dtype=np.int64)
    for i, j in zip(*np.nonzero(owners >= 0), strict=True):
        e = s.scene[owners[i, j]]
        out[:, i, j] = (int(e["row"]), int(e["col"]))
    return out.reshape(2, grid * grid)


class PatchLabelDataset(torch.utils.data.Dataset):
    """Index (epoch, i) -> both views' pixels and targets of scene i (or a skip notice)."""

    def __init__(self, scenes: Sequence[SceneImage], full_resolution: int, low_resolution: int,
                 patch: int = 14, number_on: str = "centre") -> None:
        if number_on not in NUMBER_ON:
            raise ConfigError(f"data.patch_number {number_on!r}: choose one of {', '.join(NUMBER_ON)}")
        self.number_on = number_on
        for r in (full_resolution, low_resolution):
            if r % patch:
                raise ConfigError(f"resolution {r} is not a multiple of the {patch}-px patch")
        self.scenes = list(scenes)
        self.res = {"full": full_resolution, "lowres": low_resolution}
        self.patch = patch

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:

        _, i = key
        s = self.scenes[i]
        try:
            image = load_image(s.image)
        except ImageError as e:
            return {"skip": str(e)}
        if image.size != (s.size, s.size):
            return {"skip": f"{s.image} is {image.size[0]} x {image.size[1]}, its folder says {s.size} x {s.size}"}
        item: dict[str, Any] = {}
        for view, r in self.res.items():
            # the same resampling as the VLM's modes: prepare_image (bicubic, square images unpadded)
            # for the high-detail canvas, expand2square + bicubic for the low-resolution view
            pixels = to_tensor(expand2square(image).resize((r, r), Image.Resampling.BICUBIC))
            item[view] = (pixels, torch.from_numpy(patch_targets(s, r // self.patch, self.number_on)))
        return item


@dataclass
class PatchBatch:
    views: dict[str, tuple[Tensor, Tensor]]  # view -> (pixels [B, 3, R, R], targets [B, 3, g * g])
    skipped: int = 0
    truncated: int = 0

    def __len__(self) -> int:
        return next(iter(self.views.values()))[0].shape[0] if self.views else 0


def collate_patches(items: list[dict[str, Any]]) -> PatchBatch:
    kept = [x for x in items if "skip" not in x]
    views = {}
    if kept:
        for view in VIEWS:
            views[view] = (torch.stack([x[view][0] for x in kept]), torch.stack([x[view][1] for x in kept]))
    return PatchBatch(views=views, skipped=len(items) - len(kept))


def make_head(hidden: int, max_label: int, max_cells: int = 0) -> nn.Linear:
    """One linear layer: hidden -> colour, shape and number logits side by side, then (``max_cells`` > 0,
    the largest grid side) grid-row and grid-column logits (0 = none, 1..max_cells)."""
    cells = 2 * (max_cells + 1) if max_cells > 0 else 0
    head = nn.Linear(hidden, len(COLOUR_CLASSES) + len(SHAPE_CLASSES) + max_label + 1 + cells)
    nn.init.normal_(head.weight, std=hidden**-0.5)
    nn.init.zeros_(head.bias)
    return head


def balanced_ce(logits: Tensor, target: Tensor) -> Tensor:
    """Mean CE over the patches holding something plus mean CE over the empty ones: most patches are
    background, and a plain mean would let 'none everywhere' win."""
    ce = F.cross_entropy(logits.float(), target, reduction="none")
    fg = target > 0
    parts = [ce[fg].mean() if fg.any() else None, ce[~fg].mean() if (~fg).any() else None]
    kept = [p for p in parts if p is not None]
    return sum(kept) / len(kept)


def head_layout(max_label: int, heads: Sequence[str] = HEADS, max_cells: int = 0) -> list[tuple[str, int, int]]:
    """(name, first logit, logit count) of each head in ``heads``, in :func:`make_head`'s output."""
    sizes = dict(zip(AUX_HEADS, (len(COLOUR_CLASSES), len(SHAPE_CLASSES), max_label + 1, max_cells + 1,
                                 max_cells + 1), strict=True))
    starts = dict(zip(AUX_HEADS, np.cumsum([0, *sizes.values()])[:-1].tolist(), strict=True))
    if max_cells < 1 and any(h in CELL_HEADS for h in heads):
        raise ConfigError("the row and column heads need the largest grid side (max_cells >= 1)")
    return [(h, starts[h], sizes[h]) for h in heads]


def head_terms(logits: Tensor, targets: Tensor,
               layout: Sequence[tuple[str, int, int]]) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
    """Per head of ``layout`` (``targets`` row i belongs to ``layout[i]``): its balanced CE, its accuracy on
    the patches holding something and the share of the other patches it calls "none" (nan where there
    are no such patches)."""
    out = {}
    for row, (name, start, n) in enumerate(layout):
        lg, tg = logits[..., start : start + n].reshape(-1, n), targets[:, row].reshape(-1)
        ce = balanced_ce(lg, tg)
        with torch.no_grad():
            pred, fg = lg.argmax(-1), tg > 0
            nan = torch.full((), float("nan"), device=lg.device)
            acc = (pred[fg] == tg[fg]).float().mean() if fg.any() else nan
            none = (pred[~fg] == 0).float().mean() if (~fg).any() else nan
        out[name] = (ce, acc, none)
    return out


class PatchLabelModule(nn.Module):
    """What accelerate wraps for this objective: tower + head -> loss and per-head metrics."""

    def __init__(self, net: nn.Module, head: nn.Module, max_label: int) -> None:
        super().__init__()
        self.net, self.head = net, head  # net: the LavidaModel (head is also its ``patch_head``)
        self.layout = head_layout(max_label)

    def forward(self, batch: PatchBatch) -> dict[str, Tensor]:
        tower = self.net.model.vision_tower
        dtype = next(tower.parameters()).dtype
        if len(batch) == 0:  # every image unreadable: a zero loss touching every trainable weight (DDP)
            zero = sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
            nan = torch.full((), float("nan"), device=zero.device)
            return {"loss": zero, **{f"{m}_{h}_{v}": nan for m in ("ce", "acc", "none") for h in HEADS for v in VIEWS},
                    "samples": torch.zeros((), device=zero.device)}
        losses, metrics = [], {}
        for view, (pixels, targets) in batch.views.items():
            device = self.head.weight.device
            feats = tower(pixels.to(device, dtype))  # [B, g * g, D]
            logits = self.head(feats.to(self.head.weight.dtype)).float()
            for name, (ce, acc, none) in head_terms(logits, targets.to(device), self.layout).items():
                losses.append(ce)
                metrics[f"acc_{name}_{view}"], metrics[f"none_{name}_{view}"] = acc, none
                metrics[f"ce_{name}_{view}"] = ce.detach()
        loss = sum(losses) / len(losses)
        return {"loss": loss, **metrics, "samples": torch.tensor(float(len(batch)), device=loss.device)}


# ----------------------------------------------------------------------------- data.patch_aux


def scenes_of(images: Sequence[str | Path]) -> list[SceneImage]:
    """The scene of each training image, for ``data.patch_aux``: every image must lie in a `shirg
    entitygrid` folder (``FOLDER/images/NAME.png`` with ``FOLDER/entitygrid.json``) whose records hold it."""
    by_folder: dict[Path, dict[Path, SceneImage]] = {}
    out = []
    for image in images:
        path = Path(image).resolve()
        folder = path.parent.parent
        if folder not in by_folder:
            if not (folder / "entitygrid.json").is_file():
                raise ConfigError(f"data.patch_aux labels EntityGrid scenes: {image} is not in a `shirg entitygrid` "
                                  "folder (FOLDER/images/NAME.png next to FOLDER/entitygrid.json)")
            by_folder[folder] = {s.image.resolve(): s for s in load_scenes([folder])[0]}
        scene = by_folder[folder].get(path)
        if scene is None:
            raise ConfigError(f"data.patch_aux: {image} has no scene in {folder / QUESTIONS_FILE}")
        out.append(scene)
    return out


class PatchTargets:
    """(sample index, resolution) -> [len(heads), G * G] labels of one training sample's hi-detail patches
    (G = resolution / patch), the rows of :func:`patch_targets` (and of :func:`cell_targets`, for the row
    and column heads) that ``heads`` names."""

    def __init__(self, scenes: Sequence[SceneImage], heads: Sequence[str], patch: int, number_on: str) -> None:
        self.scenes, self.patch, self.number_on = list(scenes), patch, number_on
        self.rows = [AUX_HEADS.index(h) for h in heads]
        # the row and column heads' class count less one: the scenes' largest grid side (0: no such head)
        cells = any(h in CELL_HEADS for h in heads)
        self.max_cells = max((max(s.grid) for s in self.scenes), default=0) if cells else 0

    @property
    def cells(self) -> bool:
        """Whether a row or column head is named."""
        return self.max_cells > 0

    def __call__(self, i: int, resolution: int) -> Tensor:
        s = self.scenes[i]
        if resolution % self.patch:
            raise ConfigError(f"resolution {resolution} is not a multiple of the {self.patch}-px patch")
        grid = resolution // self.patch
        owned = patch_owners(s, grid)  # drawn once for both kinds of target
        parts = [patch_targets(s, grid, self.number_on, owned)]
        if self.cells:
            parts.append(cell_targets(s, owned[0]))
        return torch.from_numpy(np.concatenate(parts)[self.rows])


class PatchAuxLossModule(nn.Module):
    """The answer loss plus ``weight`` x the balanced cross-entropy of a linear head on the visual tokens
    the language model receives (``full`` mode: the projector's output, one token per patch), per head
    named in ``heads``. Also logs ``answer`` (the answer loss alone), ``patch_aux`` and each head's
    accuracy on the patches holding something (``acc_<head>``)."""

    def __init__(self, answer: LossModule, head: nn.Module, max_label: int, heads: Sequence[str],
                 weight: float, max_cells: int = 0) -> None:
        super().__init__()
        if answer.mode != "full":
            raise ConfigError(f"data.patch_aux needs data.mode full, got {answer.mode!r}")
        self.answer, self.head, self.weight = answer, head, float(weight)
        self.heads = head_layout(max_label, heads, max_cells)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        if len(batch) == 0:
            out = self.answer(batch)
            nan = torch.full((), float("nan"), device=out["loss"].device)
            return {**out, "answer": nan, "patch_aux": nan, **{f"acc_{h}": nan for h, _, _ in self.heads}}
        lavida = self.answer.lavida
        blocks = visual_blocks(lavida, batch, "full", self.answer.visual)
        answer = diffusion_loss(lavida, batch, "full", self.answer.visual, self.answer.eps, blocks=blocks)
        feats = torch.stack(blocks)  # [B, G * G, d]: full mode keeps every patch, in raster order
        targets = batch.patch_targets
        if targets is None or targets.shape[-1] != feats.shape[1]:
            got = None if targets is None else targets.shape[-1]
            raise ConfigError(f"data.patch_aux: the batch's patch labels ({got}) do not match its {feats.shape[1]} "
                              "visual tokens")
        logits = self.head(feats.to(self.head.weight.dtype)).float()
        terms = head_terms(logits, targets.to(logits.device), self.heads)
        metrics = {f"acc_{name}": acc for name, (_, acc, _) in terms.items()}
        aux = sum(ce for ce, _, _ in terms.values()) / len(terms)
        return {"loss": answer.loss + self.weight * aux.to(answer.loss.device), "ce_copy1": answer.ce_copy1,
                "ce_copy2": answer.ce_copy2, "answer": answer.loss.detach(), "patch_aux": aux.detach(), **metrics,
                "samples": torch.tensor(float(answer.samples), device=answer.loss.device)}
