"""EntityGrid: a generated, openly specified high-resolution recognition benchmark (docs/entitygrid.md).

Each image is a ROWS x COLS grid; some cells hold an entity = a coloured shape with a small number
written under it. Shapes are large enough to see at 384 px, the numbers are not: reading them
needs the high-resolution path. Sample i depends only on (seed, i), so ``--n 6`` is a prefix of
``--n 500`` and every run of the same command writes identical files.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from shirg.errors import ConfigError
from shirg.io import atomic_write, write_json, write_text
from shirg.llava import llava_record

VERSION = 1
COLOURS = {
    "red": (214, 39, 40),
    "green": (44, 160, 44),
    "blue": (31, 90, 220),
    "yellow": (235, 200, 20),
    "purple": (148, 60, 189),
    "orange": (255, 127, 14),
}
SHAPES = ("circle", "square", "triangle", "diamond", "star", "hexagon")
TYPES = ("recognition", "position", "counting", "reading")
LABEL_PLACES = ("under", "inside")
BACKGROUNDS = ("white", "clutter")
MAX_LOOKALIKES = (len(COLOURS) - 1) + (len(SHAPES) - 1)
MAX_STRAYS = 400
QUESTIONS_FILE = "questions.jsonl"
LLAVA_FILE = "llava_train.json"
META_FILE = "entitygrid.json"


@dataclass
class EntityGridConfig:
    """Every number of the generator. Pixel sizes are for the full ``size`` x ``size`` image."""

    size: int = 1344
    rows: int = 8
    cols: int = 8
    occupancy: float = 0.6  # chance that a cell holds an entity
    entity_scale: float = 0.3  # shape side as a fraction of the cell side
    label_px: int = 14  # font size of the numbers (about 4 px at 384, 7 px at 672 for size 1344)
    max_label: int = 99
    label_place: str = "under"  # "under" the shape, or "inside": on a white tag at the shape's centre
    # > 0: each entity is moved (by at most label_grid / 2 px) so its number's centre falls on the centre
    # of a label_grid-px square of the image (at 14, a patch of the high-detail grid of a 336-px image)
    label_grid: int = 0
    # with label_grid: then moved by a random whole number of pixels in [-label_jitter, label_jitter] per
    # axis (drawn from its own stream, so the scene and the answers stay those of the same seed)
    label_jitter: int = 0
    # dense scenes (docs/entitygrid.md, "Dense scenes"); the defaults draw exactly the scenes of before
    repeat_labels: bool = False  # numbers drawn with repetition from 1..max_label (digits on grids of > 9 cells)
    lookalikes: int = 0  # look-alikes of the reading or recognition question's entity (same colour or same shape)
    background: str = "white"  # or "clutter": a low-contrast texture of strokes and blobs, never digits
    # stray numbers: digits drawn like the entities' (black on a white tag) on free background, on no entity;
    # never asked about. They look like the numbers that matter, so a question-blind selection cannot tell them
    # apart by appearance (with label_grid each lies on the centre of one label_grid square)
    stray_digits: int = 0

    def validate(self) -> None:
        if self.rows < 1 or self.cols < 1 or self.rows * self.cols < 2:
            raise ConfigError(f"grid {self.rows}x{self.cols} is too small; use at least 2 cells (e.g. 8x8)")
        if self.size < 8 * max(self.rows, self.cols):
            raise ConfigError(f"image size {self.size} is too small for a {self.rows}x{self.cols} grid")
        if not 0 < self.occupancy <= 1:
            raise ConfigError(f"occupancy {self.occupancy} must be in (0, 1]")
        if not 0.05 <= self.entity_scale <= 0.8:
            raise ConfigError(f"entity_scale {self.entity_scale} must be in [0.05, 0.8]")
        if self.label_px < 4:
            raise ConfigError(f"label_px {self.label_px} is too small to render; use 4 or more")
        if self.label_place not in LABEL_PLACES:
            raise ConfigError(f"label_place {self.label_place!r} is not one of {', '.join(LABEL_PLACES)}")
        if self.label_grid < 0 or self.label_grid > self.size:
            raise ConfigError(f"label_grid {self.label_grid} must be 0 (off) or a square side in pixels up to "
                              f"the image size {self.size}, e.g. 14")
        if self.label_jitter < 0 or (self.label_jitter and not self.label_grid):
            raise ConfigError(f"label_jitter {self.label_jitter} must be >= 0 and needs label_grid > 0")
        if self.label_grid and 2 * self.label_jitter >= self.label_grid - self.label_px / 2:
            raise ConfigError(f"label_jitter {self.label_jitter} would move numbers out of their {self.label_grid}-px "
                              f"square: keep it below (label_grid - label_px / 2) / 2 = "
                              f"{(self.label_grid - self.label_px / 2) / 2:g}")
        if self.label_grid:  # the shape (and a number drawn under it) must stay inside its cell
            cw, ch = self.size / self.cols, self.size / self.rows
            radius = self.entity_scale * min(cw, ch) / 2
            move = self.label_grid / 2 + self.label_jitter
            slack_x = max(0.0, cw / 2 - radius - 4)
            slack_y = max(0.0, ch / 2 - radius - self.label_px - 6)
            below = self.label_px + 3 if self.label_place == "under" else 0
            if 0.6 * slack_x + move + radius > cw / 2 or \
                    self.label_px / 2 + 0.6 * slack_y + move + radius + below > ch / 2:
                raise ConfigError(f"label_grid {self.label_grid} (+ label_jitter {self.label_jitter}) can move "
                                  f"entities out of their cells at this size, grid and entity_scale; use a smaller "
                                  "label_grid or entity_scale")
        if self.max_label < self.rows * self.cols and not self.repeat_labels:
            raise ConfigError(f"max_label {self.max_label} must be >= the number of cells {self.rows * self.cols} "
                              "(numbers are unique per image), or pass --repeat-labels")
        if self.max_label < 2:
            raise ConfigError(f"max_label {self.max_label} must be >= 2")
        if not 0 <= self.lookalikes <= MAX_LOOKALIKES:
            raise ConfigError(f"lookalikes {self.lookalikes} must be in 0..{MAX_LOOKALIKES} (other colours + other "
                              "shapes of one entity)")
        if self.lookalikes >= self.rows * self.cols:
            raise ConfigError(f"lookalikes {self.lookalikes} needs more than {self.rows * self.cols} cells")
        if self.background not in BACKGROUNDS:
            raise ConfigError(f"background {self.background!r} is not one of {', '.join(BACKGROUNDS)}")
        if not 0 <= self.stray_digits <= MAX_STRAYS:
            raise ConfigError(f"stray_digits {self.stray_digits} must be in 0..{MAX_STRAYS}")


# Named generator settings. ``small``: the half-scale task of the bundled small model (336 px, a 3 x 3
# grid, digits 1-9 about 6 px tall: legible on the 24 x 24 patch grid at 336, a blur at 168 px).
PRESETS = {
    "default": {},
    "small": dict(size=336, rows=3, cols=3, occupancy=0.7, entity_scale=0.45, label_px=8, max_label=9),
}


def preset_config(name: str, **changes) -> EntityGridConfig:
    """The preset's config with ``changes`` (None values ignored) applied on top."""
    if name not in PRESETS:
        raise ConfigError(f"unknown EntityGrid preset {name!r}; valid: {', '.join(PRESETS)}")
    values = {**PRESETS[name], **{k: v for k, v in changes.items() if v is not None}}
    return EntityGridConfig(**values)


@dataclass
class Entity:
    row: int  # 1-based, top to bottom
    col: int  # 1-based, left to right
    colour: str
    shape: str
    label: int
    box: list[int] = field(default_factory=list)  # [x0, y0, x1, y1] pixels, shape and label together
    label_box: list[int] = field(default_factory=list)  # [x0, y0, x1, y1] pixels of the number alone


def parse_grid(text: str) -> tuple[int, int]:
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--grid must look like ROWSxCOLS (e.g. 8x8), got {text!r}") from None
    return rows, cols


def label_font(px: int):
    return ImageFont.load_default(size=px)


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    elif shape == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * 0.45
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        draw.polygon(pts, fill=fill)
    elif shape == "hexagon":
        draw.polygon([(cx + r * math.cos(k * math.pi / 3), cy + r * math.sin(k * math.pi / 3)) for k in range(6)],
                     fill=fill)
    else:
        raise ConfigError(f"unknown shape {shape!r}")


def _clutter(draw: ImageDraw.ImageDraw, cfg: EntityGridConfig, rng: random.Random) -> None:
    """A low-contrast texture over the whole image: light strokes and blobs in pale tints (no text)."""
    s = cfg.size
    for _ in range(s * s // 400):  # about one stroke or blob per 20 x 20 px
        tint = tuple(rng.randint(200, 245) for _ in range(3))
        x, y = rng.uniform(0, s), rng.uniform(0, s)
        if rng.random() < 0.5:
            length, angle = rng.uniform(0.02, 0.12) * s, rng.uniform(0, math.pi)
            draw.line([(x, y), (x + length * math.cos(angle), y + length * math.sin(angle))], fill=tint,
                      width=rng.randint(1, 3))
        else:
            r = rng.uniform(0.005, 0.03) * s
            draw.ellipse([x - r, y - r, x + r, y + r], fill=tint)


def _lookalike_attrs(cfg: EntityGridConfig, n: int, rng: random.Random) -> tuple[list[tuple[str, str]], int, list[int]]:
    """Colour and shape of n entities such that entity ``anchor`` has a colour-shape pair of its own and
    min(lookalikes, n - 1) others share its colour (another shape) or its shape (another colour), in turn."""
    colours = sorted(COLOURS)
    attrs = [(rng.choice(colours), rng.choice(SHAPES)) for _ in range(n)]
    anchor = rng.randrange(n)
    ac, ash = attrs[anchor]
    other_colours, other_shapes = [c for c in colours if c != ac], [s for s in SHAPES if s != ash]
    others = [i for i in range(n) if i != anchor]
    rng.shuffle(others)
    m = min(cfg.lookalikes, n - 1)
    # half share the colour, half the shape (at most 5 of each: validate bounds m by MAX_LOOKALIKES)
    n_colour = min(len(other_shapes), (m + 1) // 2)
    n_colour += max(0, m - n_colour - len(other_colours))
    same_colour = rng.sample(other_shapes, n_colour)
    same_shape = rng.sample(other_colours, m - n_colour)
    for j, i in enumerate(others[:m]):
        attrs[i] = (ac, same_colour[j]) if j < len(same_colour) else (same_shape[j - len(same_colour)], ash)
    for i in others[m:]:
        if attrs[i][0] == ac or attrs[i][1] == ash:  # every other entity: neither the anchor's colour nor shape
            attrs[i] = (rng.choice(other_colours), rng.choice(other_shapes))
    return attrs, anchor, others[:m]


def render_scene(cfg: EntityGridConfig, rng: random.Random,
                 info: dict | None = None) -> tuple[Image.Image, list[Entity]]:
    """Draw one grid image; entity boxes are filled in here. With ``cfg.lookalikes``, ``info`` (when
    given) gets ``anchor``: the index of the entity whose look-alikes were drawn."""
    img = Image.new("RGB", (cfg.size, cfg.size), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    cw, ch = cfg.size / cfg.cols, cfg.size / cfg.rows
    if cfg.background == "clutter":
        _clutter(draw, cfg, rng)
    for c in range(1, cfg.cols):
        draw.line([(c * cw, 0), (c * cw, cfg.size)], fill=(225, 225, 225), width=1)
    for r in range(1, cfg.rows):
        draw.line([(0, r * ch), (cfg.size, r * ch)], fill=(225, 225, 225), width=1)
    if cfg.repeat_labels:
        labels = [rng.randint(1, cfg.max_label) for _ in range(cfg.rows * cfg.cols)]
    else:
        labels = rng.sample(range(1, cfg.max_label + 1), cfg.rows * cfg.cols)
    cells = [(r, c) for r in range(1, cfg.rows + 1) for c in range(1, cfg.cols + 1)]
    occupied = [cell for cell in cells if rng.random() < cfg.occupancy] or [rng.choice(cells)]
    attrs = None
    if cfg.lookalikes:
        attrs, anchor, looks = _lookalike_attrs(cfg, len(occupied), rng)
        for i in looks:  # a look-alike never carries the anchor's number
            if labels[i] == labels[anchor]:
                labels[i] = labels[anchor] % cfg.max_label + 1
        if info is not None:
            info["anchor"] = anchor
    font = label_font(cfg.label_px)
    radius = cfg.entity_scale * min(cw, ch) / 2
    entities = []
    for k, (r, c) in enumerate(occupied):
        colour, shape = attrs[k] if attrs else (rng.choice(sorted(COLOURS)), rng.choice(SHAPES))
        # jitter inside the cell, leaving room for the label underneath
        slack_x = max(0.0, cw / 2 - radius - 4)
        slack_y = max(0.0, ch / 2 - radius - cfg.label_px - 6)
        cx = (c - 0.5) * cw + rng.uniform(-slack_x, slack_x) * 0.6
        cy = (r - 0.5) * ch - cfg.label_px / 2 + rng.uniform(-slack_y, slack_y) * 0.6
        text = str(labels[k])
        tx0, ty0, tx1, ty1 = draw.textbbox((0, 0), text, font=font)
        if cfg.label_grid:  # the number's centre onto the centre of its label_grid square (no rng draw)
            g = cfg.label_grid
            ly = cy if cfg.label_place == "inside" else cy + radius + 3 + (ty1 - ty0) / 2
            jx = jy = 0
            if cfg.label_jitter:
                own = random.Random(f"label-jitter-{cx!r}-{cy!r}-{labels[k]}")
                j = cfg.label_jitter
                jx, jy = own.randint(-j, j), own.randint(-j, j)
            cx += (math.floor(cx / g) + 0.5) * g - cx + jx
            cy += (math.floor(ly / g) + 0.5) * g - ly + jy
        draw_shape(draw, shape, cx, cy, radius, COLOURS[colour])
        tx = cx - (tx1 - tx0) / 2 - tx0
        if cfg.label_place == "inside":  # black on a white tag centred on the shape: legible on every colour
            ty = cy - (ty1 - ty0) / 2 - ty0
            draw.rectangle([tx + tx0 - 2, ty + ty0 - 2, tx + tx1 + 1, ty + ty1 + 1], fill=(255, 255, 255))
        else:
            ty = cy + radius + 3 - ty0
        draw.text((tx, ty), text, fill=(0, 0, 0), font=font)
        box = [math.floor(min(cx - radius, tx + tx0)), math.floor(cy - radius),
               math.ceil(max(cx + radius, tx + tx1)), math.ceil(max(cy + radius, ty + ty1))]
        box = [max(0, min(cfg.size, v)) for v in box]
        label_box = [math.floor(tx + tx0), math.floor(ty + ty0), math.ceil(tx + tx1), math.ceil(ty + ty1)]
        label_box = [max(0, min(cfg.size, v)) for v in label_box]
        entities.append(Entity(r, c, colour, shape, labels[k], box, label_box))
    if cfg.stray_digits:  # their own stream, seeded by the scene: the questions stay those of the plain scene
        own = random.Random(f"strays-{[(e.box, e.label) for e in entities]}")
        strays = _strays(draw, cfg, own, font, [e.box for e in entities])
        if info is not None:
            info["strays"] = strays
    return img, entities


def _strays(draw: ImageDraw.ImageDraw, cfg: EntityGridConfig, rng: random.Random, font,
            boxes: list[list[int]]) -> list[dict]:
    """Up to ``cfg.stray_digits`` numbers drawn as the entities' are (black on a white tag) where they touch no
    entity box and no other stray (2 px apart); on the centre of a label_grid square when label_grid is set.
    Returns each one's number and pixel box (tag included)."""
    g = cfg.label_grid
    if g:
        n = int(cfg.size // g)
        spots = [((i + 0.5) * g, (j + 0.5) * g) for j in range(n) for i in range(n)]
        rng.shuffle(spots)
    else:
        spots = [(rng.uniform(0, cfg.size), rng.uniform(0, cfg.size)) for _ in range(20 * cfg.stray_digits)]
    taken = [list(b) for b in boxes]
    out: list[dict] = []
    for cx, cy in spots:
        if len(out) == cfg.stray_digits:
            break
        text = str(rng.randint(1, cfg.max_label))
        tx0, ty0, tx1, ty1 = draw.textbbox((0, 0), text, font=font)
        tx, ty = cx - (tx1 - tx0) / 2 - tx0, cy - (ty1 - ty0) / 2 - ty0
        tag = [math.floor(tx + tx0 - 2), math.floor(ty + ty0 - 2), math.ceil(tx + tx1 + 1), math.ceil(ty + ty1 + 1)]
        if tag[0] < 0 or tag[1] < 0 or tag[2] > cfg.size or tag[3] > cfg.size:
            continue
        if any(tag[0] < b[2] + 2 and b[0] < tag[2] + 2 and tag[1] < b[3] + 2 and b[1] < tag[3] + 2 for b in taken):
            continue
        draw.rectangle(tag, fill=(255, 255, 255))
        draw.text((tx, ty), text, fill=(0, 0, 0), font=font)
        taken.append(tag)
        out.append({"label": int(text), "box": tag})
    return out


def _pos(e: Entity) -> str:
    return f"row {e.row}, column {e.col}"


def make_question(qtype: str, entities: list[Entity], rng: random.Random, label_place: str = "under",
                  target: Entity | None = None) -> dict:
    """Question, answer(s) and the queried entities for one scene (``label_place``: where the numbers
    are drawn, which the reading question names; ``target``: the entity a reading or recognition question
    asks about, whose colour-shape pair must be its own, e.g. the anchor of look-alike distractors)."""
    combo = {}
    for e in entities:
        combo.setdefault((e.colour, e.shape), []).append(e)
    if target is not None and qtype in ("reading", "recognition") and len(combo[(target.colour, target.shape)]) != 1:
        raise ConfigError(f"a {qtype} target must be the only entity of its colour and shape")
    if qtype == "recognition":
        e = target if target is not None else rng.choice(entities)
        return {"question": f"What is in row {e.row}, column {e.col}? Answer with the colour and the shape.",
                "answers": [f"{e.colour} {e.shape}"], "targets": [e]}
    if qtype == "position":
        e = rng.choice(entities)
        group = combo[(e.colour, e.shape)]
        return {"question": f"Where is every {e.colour} {e.shape}? Answer with row and column "
                            "(rows top to bottom, columns left to right, from 1), separated by semicolons.",
                "answers": ["; ".join(_pos(g) for g in group)], "targets": group}
    if qtype == "counting":
        e = rng.choice(entities)
        kind = rng.choice(("both", "colour", "shape"))
        if kind == "both":
            group, what = combo[(e.colour, e.shape)], f"{e.colour} {e.shape}s"
        elif kind == "colour":
            group, what = [g for g in entities if g.colour == e.colour], f"{e.colour} shapes"
        else:
            group, what = [g for g in entities if g.shape == e.shape], f"{e.shape}s"
        return {"question": f"How many {what} are there? Answer with a number.",
                "answers": [str(len(group))], "targets": group}
    if qtype == "reading":
        where = "on" if label_place == "inside" else "under"
        unique = [g[0] for g in combo.values() if len(g) == 1]
        if target is not None:
            e = target
            q = f"What number is written {where} the {e.colour} {e.shape}?"
        elif unique:
            e = rng.choice(unique)
            q = f"What number is written {where} the {e.colour} {e.shape}?"
        else:
            e = rng.choice(entities)
            q = f"What number is written {where} the shape in row {e.row}, column {e.col}?"
        return {"question": q, "answers": [str(e.label)], "targets": [e]}
    raise ConfigError(f"unknown question type {qtype!r}; valid: {', '.join(TYPES)}")


CAPTION_QUESTION = "Describe every cell, row by row."


def describe_scene(record: dict) -> str:
    """A dense training caption of a sample's scene: every cell in raster order, "colour shape number"
    or "empty", cells separated by commas and rows by semicolons."""
    rows, cols = record["grid"]
    cells = {(e["row"], e["col"]): f"{e['colour']} {e['shape']} {e['label']}" for e in record["scene"]}
    return "; ".join(", ".join(cells.get((r, c), "empty") for c in range(1, cols + 1)) for r in range(1, rows + 1))


def cell_question(row: int, col: int) -> str:
    return f"Describe the cell in row {row}, column {col}."


def describe_cell(record: dict, row: int, col: int) -> str:
    """What one cell holds: "colour shape number" or "empty"."""
    for e in record["scene"]:
        if (e["row"], e["col"]) == (row, col):
            return f"{e['colour']} {e['shape']} {e['label']}"
    return "empty"


def training_records(records: list[dict], captions: bool = False, cells: int = 0) -> list[dict]:
    """LLaVA conversation records of samples (``image`` set): every question, then (``captions``)
    one dense caption per image, then ``cells`` cell records per image (cells drawn without
    replacement, seeded by the sample id; every cell when ``cells`` >= rows x cols), in sample order."""
    llava = [llava_record(r["image"], r["question"], r["answers"][0], r["id"], r["boxes"]) for r in records]
    if captions:
        llava += [llava_record(r["image"], CAPTION_QUESTION, describe_scene(r), r["id"] + "-caption") for r in records]
    if cells > 0:
        for r in records:
            rows, cols = r["grid"]
            grid = [(i, j) for i in range(1, rows + 1) for j in range(1, cols + 1)]
            if cells < len(grid):
                grid = sorted(random.Random(f"cells-{r['id']}").sample(grid, cells))
            llava += [llava_record(r["image"], cell_question(i, j), describe_cell(r, i, j), f"{r['id']}-cell{i}-{j}")
                      for i, j in grid]
    return llava


def sample_id(seed: int, index: int) -> str:
    return f"eg{seed}-{index:06d}"


def check_types(types: Sequence[str] | None) -> tuple[str, ...]:
    """The question types to cycle through (None: all of :data:`TYPES`, in that order)."""
    if types is None:
        return TYPES
    types = tuple(types)
    bad = [t for t in types if t not in TYPES]
    if bad or not types or len(set(types)) != len(types):
        raise ConfigError(f"question types {','.join(types) or '(none)'}: give each of {', '.join(TYPES)} at most "
                          "once, e.g. --types reading")
    return types


def generate_sample(cfg: EntityGridConfig, seed: int, index: int,
                    types: Sequence[str] | None = None) -> tuple[Image.Image, dict]:
    """Sample ``index`` of the benchmark with this seed: the image and its record (no image path yet).
    The question type cycles through ``types`` (default: all four) by index; the scene depends only on
    (seed, index), so a ``types``-restricted set shows the same scenes as the full one."""
    types = check_types(types)
    rng = random.Random(f"entitygrid-v{VERSION}-{seed}-{index}")
    info: dict = {}
    img, entities = render_scene(cfg, rng, info)
    qtype = types[index % len(types)]
    target = entities[info["anchor"]] if "anchor" in info and qtype in ("reading", "recognition") else None
    q = make_question(qtype, entities, rng, cfg.label_place, target)
    record = {
        "id": sample_id(seed, index),
        "type": qtype,
        "question": q["question"],
        "answers": q["answers"],
        "boxes": [t.box for t in q["targets"]],
        "targets": [{"row": t.row, "col": t.col} for t in q["targets"]],
        "width": cfg.size,
        "height": cfg.size,
        "grid": [cfg.rows, cfg.cols],
        "scene": [asdict(e) for e in entities],
    }
    if cfg.stray_digits:  # only then, so the records of scenes without strays stay as they were
        record["strays"] = info["strays"]
    return img, record


def generate(out: str | Path, n: int, seed: int = 0, cfg: EntityGridConfig | None = None,
             train_records: str | Path | None = None, progress: bool = False, captions: bool = False,
             cells: int = 0, types: Sequence[str] | None = None) -> dict:
    """Write ``images/*.png``, ``questions.jsonl``, LLaVA training records and ``entitygrid.json``.

    ``captions``: the training records also get one dense caption per image (question
    :data:`CAPTION_QUESTION`, answer :func:`describe_scene`), a training signal that names every
    entity and number; ``questions.jsonl`` (what ``shirg eval`` reads) never holds them.

    Returns the metadata written to ``entitygrid.json`` (config, seed, counts per type, files).
    """
    cfg = cfg or EntityGridConfig()
    cfg.validate()
    types = check_types(types)
    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    records = []
    indices = range(n)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="entitygrid", unit="img")
    for i in indices:
        img, record = generate_sample(cfg, seed, i, types)
        rel = f"images/{record['id']}.png"
        atomic_write(out / rel, lambda p, img=img: img.save(p, format="PNG"))
        records.append({"image": rel, **record})
    lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    write_text(out / QUESTIONS_FILE, lines)
    llava_path = Path(train_records) if train_records else out / LLAVA_FILE
    llava = training_records(records, captions, cells)
    if train_records:  # image paths relative to the records file's folder
        base = llava_path.resolve().parent
        for rec in llava:
            rec["image"] = str(Path(_relpath(out.resolve() / rec["image"], base)))
    write_json(llava_path, llava)
    counts = {t: sum(1 for r in records if r["type"] == t) for t in TYPES}
    meta = {"benchmark": "entitygrid", "version": VERSION, "seed": seed, "n": n, "config": asdict(cfg),
            "types": list(types), "counts": counts, "captions": captions, "cells": cells,
            "questions": QUESTIONS_FILE,
            "llava_records": str(llava_path)}
    write_json(out / META_FILE, meta)
    return meta


def _relpath(path: Path, base: Path) -> str:
    import os

    return os.path.relpath(path, base)
