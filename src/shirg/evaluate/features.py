"""What do a model's visual features hold? Linear probes of EntityGrid scene attributes per patch.

Each high-detail patch (one of the G x G cells of the R x R canvas) whose centre lies inside an entity's
box is labelled with that entity's colour, shape, number, grid row and grid column. A linear map
(ridge regression on one-hot targets, closed form) is fitted from the patch's features on the first
images and scored on the others, for the tower's output and for the projector's output (what the
language model receives). An attribute the probe decodes is in the features; one the language model
still does not use is a failure of what the model learnt to read, not of what it sees. Used by
``shirg probe-features``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from shirg.entitygrid import QUESTIONS_FILE
from shirg.errors import ConfigError
from shirg.evaluate.evidence import entity_patches
from shirg.evaluate.stats import wilson
from shirg.io import read_jsonl
from shirg.model.lavida import LavidaModel
from shirg.vision.encode import encode_dual_scale

ATTRIBUTES = ("colour", "shape", "number", "row", "col")
FEATURES = ("tower", "projector")


def read_scenes(folder: str | Path, n: int) -> list[dict]:
    """The first ``n`` records of a `shirg entitygrid` folder (their scenes are what the probes label)."""
    questions = Path(folder) / QUESTIONS_FILE
    if not questions.is_file():
        raise ConfigError(f"{folder} has no {QUESTIONS_FILE}; pass a `shirg entitygrid` folder")
    return read_jsonl(questions)[:n]


def patch_labels(scene: Sequence[dict], image_size: tuple[int, int], content_box: tuple[float, float, float, float],
                 grid: int, attribute: str) -> list:
    """Per patch of the G x G grid (raster order), the attribute of the entity the patch belongs to (its
    centre inside the entity's box, as evidence recall counts it), or None (background)."""
    key = "label" if attribute == "number" else attribute
    out: list = [None] * (grid * grid)
    for e in scene:
        for p in entity_patches([e["box"]], image_size, content_box, grid).nonzero().flatten().tolist():
            out[p] = e.get(key)
    return out


def _with_bias(x: torch.Tensor) -> torch.Tensor:
    """[M, D] features -> [M, D + 1] in float64, a constant 1 appended (the probe's bias)."""
    return torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], 1)


def fit_ridge(x: torch.Tensor, y: torch.Tensor, classes: int, ridge: float = 0.1) -> torch.Tensor:
    """Weights [D + 1, classes] of a ridge regression from features (plus a bias) to one-hot labels."""
    xb = _with_bias(x)
    target = torch.nn.functional.one_hot(y, classes).double()
    eye = torch.eye(xb.shape[1], dtype=torch.float64)
    return torch.linalg.solve(xb.T @ xb + ridge * len(x) / 1000 * eye, xb.T @ target)


def predict(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (_with_bias(x) @ w).argmax(1)


@torch.no_grad()
def features(model: LavidaModel, images: Sequence[str | Path], resolution: int, batch_size: int = 16):
    """(tower [N, G*G, D], projector [N, G*G, D'], PreparedImages, grid) of every image at R x R."""
    tower, proj, prepared_all, grid = [], [], [], None
    for start in range(0, len(images), batch_size):
        tokens, prepared = encode_dual_scale(model.model.vision_tower, images[start:start + batch_size], resolution)
        tower.append(tokens.hi.float().cpu())
        proj.append(model.project(tokens.hi).float().cpu())
        prepared_all += prepared
        grid = tokens.grid
    return torch.cat(tower), torch.cat(proj), prepared_all, grid


def probe(model: LavidaModel, records: Sequence[dict], root: Path, *, resolution: int = 336, fit: int | None = None,
          attributes: Sequence[str] = ATTRIBUTES) -> dict:
    """Held-out accuracy of a linear probe per attribute and feature: fitted on the first ``fit`` images'
    entity patches (default two thirds), scored on the rest; with its Wilson interval and the majority
    class's share of the scored patches (what a probe that ignores the features gets)."""
    if len(records) < 3:
        raise ConfigError(f"a feature probe needs at least 3 images, got {len(records)}")
    fit = fit if fit is not None else (2 * len(records)) // 3
    if not 1 <= fit < len(records):
        raise ConfigError(f"--fit must be between 1 and {len(records) - 1} (images probed: {len(records)})")
    for r in records:
        scene = r.get("scene")
        if not scene or not all(isinstance(e, dict) and isinstance(e.get("box"), list) and len(e["box"]) == 4
                                for e in scene):
            raise ConfigError(f"record {r.get('id')!r} has no scene of entities with boxes: probe a `shirg "
                              "entitygrid` folder")
    tower, proj, prepared, grid = features(model, [root / r["image"] for r in records], resolution)
    out = {"images": len(records), "fit_images": fit, "grid": grid, "resolution": resolution, "attributes": {}}
    for attr in attributes:
        labels = [patch_labels(r["scene"], p.original_size, p.content_box, grid, attr)
                  for r, p in zip(records, prepared, strict=True)]
        rows = {"tower": probe_attribute(tower, labels, fit), "projector": probe_attribute(proj, labels, fit)}
        out["attributes"][attr] = {"classes": rows["tower"]["classes"], "majority": rows["tower"]["majority"],
                                   "tower": rows["tower"], "projector": rows["projector"]}
    return out


def probe_attribute(feats: torch.Tensor, labels: Sequence[Sequence], fit: int) -> dict:
    """A linear probe of one attribute: features [N, P, D] of N images' P patches, per image and patch its
    label (None: not probed); fitted on the first ``fit`` images, scored on the rest."""
    values = sorted({v for lab in labels for v in lab if v is not None}, key=str)
    index = {v: c for c, v in enumerate(values)}
    xs: dict[str, list] = {"fit": [], "score": []}
    ys: dict[str, list] = {"fit": [], "score": []}
    for k, lab in enumerate(labels):
        part = "fit" if k < fit else "score"
        keep = [p for p, v in enumerate(lab) if v is not None]
        xs[part].append(feats[k, keep])
        ys[part] += [index[lab[p]] for p in keep]
    if not ys["fit"] or not ys["score"]:
        raise ConfigError("no entity patch to fit or to score: probe more images")
    y_score = torch.tensor(ys["score"])
    w = fit_ridge(torch.cat(xs["fit"]), torch.tensor(ys["fit"]), len(values))
    hits, n = int((predict(w, torch.cat(xs["score"])) == y_score).sum()), len(y_score)
    lo, hi = wilson(hits, n)
    majority = torch.bincount(y_score, minlength=len(values)).max().item() / n
    every = torch.cat(xs["fit"] + xs["score"])
    share = variance_share(every, torch.tensor(ys["fit"] + ys["score"]))
    return {"accuracy": hits / n, "ci": [lo, hi], "patches": n, "classes": len(values), "majority": majority,
            "variance_share": share}


def variance_share(x: torch.Tensor, y: torch.Tensor) -> float:
    """The share of the features' total variance [M, D] that lies between the classes ``y`` [M] (the
    between-class sum of squares over the total, summed over dimensions): how large the attribute is in
    the features, where the probe says only whether it is there. A language model reads large directions
    first; an attribute the probe decodes at 100 % can still be a small share."""
    x = x.double()
    mean = x.mean(0)
    total = float(((x - mean) ** 2).sum())
    if total == 0:
        return 0.0
    between = sum(float((y == c).sum()) * float(((x[y == c].mean(0) - mean) ** 2).sum()) for c in y.unique().tolist())
    return between / total


def markdown(result: dict) -> str:
    lines = [f"Linear probes per entity patch: fitted on {result['fit_images']} images, scored on "
             f"{result['images'] - result['fit_images']} others ({result['grid']} x {result['grid']} patches at "
             f"{result['resolution']} px); accuracy in % with its 95 % Wilson interval over patches (the patches "
             "of one image are not independent, so the interval is narrower than it should be); \"variance\": "
             "the share of the entity patches' feature variance between the attribute's classes, in %", "",
             "| attribute | classes | majority class | tower | projector (what the LM receives) | variance: tower "
             "| variance: projector |",
             "|---|---|---|---|---|---|---|"]
    for attr, r in result["attributes"].items():
        cells = [f"{100 * r[f]['accuracy']:.1f} [{100 * r[f]['ci'][0]:.1f}, {100 * r[f]['ci'][1]:.1f}]"
                 for f in FEATURES]
        shares = [f"{100 * r[f]['variance_share']:.1f}" for f in FEATURES]
        lines.append(f"| {attr} | {r['classes']} | {100 * r['majority']:.1f} | {cells[0]} | {cells[1]} | "
                     f"{shares[0]} | {shares[1]} |")
    return "\n".join(lines)
