"""Training configuration: one dataclass tree, read from YAML, every number in one place.

Sections: ``model`` (checkpoint, dtype), ``lora`` (PEFT LoRA), ``trainable`` (components trained in
full), ``optim`` (AdamW, learning-rate groups, schedule), ``data`` (mixture, resolutions, answer
length), ``run`` (steps, batch, checkpoints, precision, logging). Unknown keys are errors, so a typo
never silently trains the wrong thing. ``--set section.key=value`` overrides any value.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from shirg.errors import ConfigError
from shirg.model.options import VisualOptions
from shirg.options import ATTRIBUTIONS, HEAD_INPUTS, TEXT_POOLS

COMPONENTS = ("coord", "vision", "projector", "llm")
SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("auto", "no", "bf16", "fp16")
OBJECTIVES = ("answer", "patch_labels")
PATCH_AUX_HEADS = ("colour", "shape", "number", "row", "column")  # patch_labels.HEADS + CELL_HEADS
RELEVANCE_TARGETS = ("none", "distilled", "box")


@dataclass
class RelevanceSection:
    """A learned relevance head trained next to the answer loss (:mod:`shirg.train.relevance`):
    ``target`` none | distilled (gradient x input of the full-resolution model) | box (uniform over
    the evidence boxes the training records carry: an upper bound, for ablations), its ``weight``,
    the listwise loss's temperature ``tau``, the head's ``rank``, what it ``reads``: ``projected``
    tokens (added to the text score) or the ``tower``'s features (for ``data.visual.score: head``,
    saliency plus the head, nothing projected), how it ``pool``s the question's words: ``max`` (the
    best word) or ``mean`` (a sum of matches; :mod:`shirg.tokens.relevance_head`), and which part of
    gradient x input the distilled target keeps (``attribution``: ``abs`` or ``support``)."""

    target: str = "none"
    weight: float = 0.1
    tau: float = 1.0
    rank: int = 16
    reads: str = "projected"
    pool: str = "max"
    attribution: str = "abs"


@dataclass
class PatchAuxSection:
    """An auxiliary loss on what the language model receives (:mod:`shirg.train.patch_labels`): with
    ``weight`` > 0, a linear head on the projector's output in ``full`` mode predicts each patch's
    EntityGrid labels (``heads``: colour, shape and/or number, as stage 0 labels them; the number on
    ``data.patch_number``'s patches; row and/or column, the grid cell of the entity covering the patch)
    and ``weight`` x its balanced cross-entropy joins the answer loss.
    A projector trained by the answer loss alone keeps only what the language model already reads;
    this keeps the named attributes large in its output. The head is not part of the model written."""

    weight: float = 0.0
    heads: list[str] = field(default_factory=lambda: ["colour"])


@dataclass
class ModelSection:
    path: str = ""  # LaViDa checkpoint folder
    dtype: str = "auto"  # weights of the frozen parts: auto = bf16 on CUDA, fp32 on CPU
    shirg_weights: str | None = None  # start from a trained coordinate embedding


@dataclass
class LoraSection:
    enabled: bool = True
    rank: int = 64
    alpha: float = 128.0
    dropout: float = 0.05
    projector: list[int] = field(default_factory=lambda: [0, 2])  # mm_projector Linear indices
    vision_layers: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    vision_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj"])
    llm_layers: list[int] | str = field(default_factory=list)  # [] = no LoRA on the LLM; "all"
    llm_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "attn_out"])


@dataclass
class TrainableSection:
    """Components trained in full (not through LoRA)."""

    components: list[str] = field(default_factory=lambda: ["coord"])


@dataclass
class OptimSection:
    lr_lora: float = 7e-5
    lr_other: float = 2e-5  # fully trained weights (coordinate embedding, projector, LLM)
    lr_vision: float | None = None  # fully trained vision tower; None = lr_other
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int | None = 500
    warmup_ratio: float | None = None  # used when warmup_steps is None
    schedule: str = "cosine"
    min_lr_ratio: float = 0.0  # cosine floor as a fraction of the peak (LaViDa: 0.1)
    max_grad_norm: float | None = 1.0


@dataclass
class DataSection:
    mixture: str | None = None  # mixture YAML (sources with sampling)
    sources: list[dict[str, Any]] = field(default_factory=list)  # the same, inline
    # visual mode used in training (shirg, full, lavida, lowres, baselines), or a list of modes:
    # each sample then draws one (seeded, like its resolution), e.g. [full, lowres]
    mode: str | list[str] = "shirg"
    resolutions: list[int] = field(default_factory=lambda: [384, 512, 672])
    snap: int = 56  # resolutions are rounded to multiples of this (384 -> 392, 512 -> 504)
    # the high-resolution modes' options (k, merge, coverage, ...); the resolution comes from `resolutions`
    visual: VisualOptions = field(default_factory=VisualOptions)
    # high-detail budgets: each sample draws its K from this list (seeded, after its mode), so a model sees
    # the prefix lengths it will be asked at; an item "LO-HI" stands for every K from LO to HI. Empty: every
    # sample keeps visual.k. `full` and LaViDa's modes ignore it
    budgets: list[int | str] = field(default_factory=list)
    answer_length: int = 32  # answer slots: answer + <|eot_id|> + EOS padding, all supervised
    end_with_eot: bool = True
    num_workers: int = 0
    mask_eps: float = 1e-3  # p = (1 - eps) t + eps
    # "answer": LaViDa's masked-diffusion answer loss; "patch_labels": stage 0 of a tower trained from
    # scratch, each patch's colour / shape / number on EntityGrid scenes (shirg.train.patch_labels)
    objective: str = "answer"
    entitygrid: list[str] = field(default_factory=list)  # patch_labels: `shirg entitygrid` folders
    # patch_labels and patch_aux: the number on its centre patch, or on every "entity" patch
    patch_number: str = "centre"
    relevance: RelevanceSection = field(default_factory=RelevanceSection)  # answer objective only
    patch_aux: PatchAuxSection = field(default_factory=PatchAuxSection)  # answer objective only


@dataclass
class RunSection:
    output_dir: str = "runs/shirg"
    seed: int = 0
    batch_size: int = 16  # per process
    grad_accum: int = 1
    epochs: float = 2.0
    max_steps: int | None = None  # optimizer steps; overrides epochs
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 1
    gradient_checkpointing: bool = True
    mixed_precision: str = "auto"  # auto = bf16 on CUDA, none on CPU
    tensorboard: bool = False
    progress: bool = True
    find_unused_parameters: bool = False


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    lora: LoraSection = field(default_factory=LoraSection)
    trainable: TrainableSection = field(default_factory=TrainableSection)
    optim: OptimSection = field(default_factory=OptimSection)
    data: DataSection = field(default_factory=DataSection)
    run: RunSection = field(default_factory=RunSection)

    def modes(self) -> list[str]:
        """The training modes as a list (``data.mode`` may be one mode or a list)."""
        return [self.data.mode] if isinstance(self.data.mode, str) else list(self.data.mode)

    def validate(self) -> TrainConfig:
        bad = [c for c in self.trainable.components if c not in COMPONENTS]
        if bad:
            raise ConfigError(f"trainable.components: unknown {bad}; choose from {', '.join(COMPONENTS)}")
        if self.optim.schedule not in SCHEDULES:
            raise ConfigError(f"optim.schedule {self.optim.schedule!r}: choose one of {', '.join(SCHEDULES)}")
        if self.run.mixed_precision is False:  # YAML 1.1 reads an unquoted `no` (and --set ...=no) as false
            self.run.mixed_precision = "no"
        if self.run.mixed_precision not in PRECISIONS:
            raise ConfigError(f"run.mixed_precision {self.run.mixed_precision!r}: choose {', '.join(PRECISIONS)}")
        if self.lora.enabled and self.lora.rank < 1:
            raise ConfigError(f"lora.rank must be >= 1, got {self.lora.rank}")
        if isinstance(self.lora.llm_layers, str) and self.lora.llm_layers != "all":
            raise ConfigError(f"lora.llm_layers must be a list of layer indices or 'all', got {self.lora.llm_layers!r}")
        if self.run.batch_size < 1 or self.run.grad_accum < 1:
            raise ConfigError("run.batch_size and run.grad_accum must be >= 1")
        check_numbers(self)
        if self.data.answer_length < 2:
            raise ConfigError(f"data.answer_length must be >= 2, got {self.data.answer_length}")
        if not self.modes() or not all(isinstance(m, str) for m in self.modes()):
            raise ConfigError(f"data.mode must be a mode name or a list of them, got {self.data.mode!r}")
        if not self.data.resolutions:
            raise ConfigError("data.resolutions is empty; give at least one, e.g. [672]")
        self.data.budgets = expand_budgets(self.data.budgets)
        if self.data.objective not in OBJECTIVES:
            raise ConfigError(f"data.objective {self.data.objective!r}: choose one of {', '.join(OBJECTIVES)}")
        rel = self.data.relevance
        if rel.target not in RELEVANCE_TARGETS:
            raise ConfigError(f"data.relevance.target {rel.target!r}: choose one of {', '.join(RELEVANCE_TARGETS)}")
        if rel.target != "none":
            if self.data.objective != "answer":
                raise ConfigError("data.relevance trains next to the answer loss: set data.objective answer "
                                  "or data.relevance.target none")
            if not (isinstance(rel.weight, int | float) and rel.weight > 0):
                raise ConfigError(f"data.relevance.weight must be > 0, got {rel.weight!r}")
            if not (isinstance(rel.tau, int | float) and rel.tau > 0):
                raise ConfigError(f"data.relevance.tau must be > 0, got {rel.tau!r}")
            if not (isinstance(rel.rank, int) and rel.rank >= 1):
                raise ConfigError(f"data.relevance.rank must be an integer >= 1, got {rel.rank!r}")
            score = self.data.visual.score
            if rel.reads not in HEAD_INPUTS:
                raise ConfigError(f"data.relevance.reads {rel.reads!r}: choose one of {', '.join(HEAD_INPUTS)}")
            if rel.pool not in TEXT_POOLS:
                raise ConfigError(f"data.relevance.pool {rel.pool!r}: choose one of {', '.join(TEXT_POOLS)}")
            if rel.attribution not in ATTRIBUTIONS:
                raise ConfigError(f"data.relevance.attribution {rel.attribution!r}: choose one of "
                                  f"{', '.join(ATTRIBUTIONS)}")
            if score == "saliency" or (score == "head" and rel.reads != "tower"):
                raise ConfigError(f"data.visual.score {score} gives a head that reads {rel.reads} tokens no term to "
                                  "learn: use score text, or score head with data.relevance.reads tower")
        if self.data.objective == "patch_labels":
            if self.lora.enabled or self.trainable.components != ["vision"]:
                raise ConfigError("data.objective patch_labels trains the vision tower alone: set lora.enabled: "
                                  "false and trainable.components: [vision]")
            folders = self.data.entitygrid
            if not isinstance(folders, list) or not folders or not all(isinstance(f, str) for f in folders):
                raise ConfigError(f"data.objective patch_labels needs data.entitygrid: a non-empty list of `shirg "
                                  f"entitygrid` folders, got {folders!r}")
            if self.data.patch_number not in ("centre", "entity"):
                raise ConfigError(f"data.patch_number {self.data.patch_number!r}: choose centre or entity")
            if self.data.mixture or self.data.sources:
                raise ConfigError("data.objective patch_labels reads data.entitygrid, not data.mixture or "
                                  "data.sources; remove them")
            if len(self.data.resolutions) != 1:
                raise ConfigError("data.objective patch_labels takes one high-detail resolution in "
                                  f"data.resolutions, got {self.data.resolutions}")
        self._check_patch_aux()
        if self.data.objective == "answer" and self.data.entitygrid:
            raise ConfigError("data.entitygrid is read only by data.objective patch_labels; the answer objective "
                              "reads data.mixture or data.sources")
        if self.data.visual.resolution != VisualOptions.resolution:
            raise ConfigError(f"data.visual.resolution ({self.data.visual.resolution}) is not read: training "
                              "resolutions come from data.resolutions")
        if not self.lora.enabled and not self.trainable.components and rel.target == "none":
            raise ConfigError("nothing to train: LoRA is disabled, trainable.components is empty and "
                              "data.relevance.target is none")
        return self

    def _check_patch_aux(self) -> None:
        aux = self.data.patch_aux
        if not (isinstance(aux.weight, int | float) and not isinstance(aux.weight, bool)
                and math.isfinite(aux.weight) and aux.weight >= 0):
            raise ConfigError(f"data.patch_aux.weight must be a number >= 0 (0: off), got {aux.weight!r}")
        if aux.weight == 0:
            return
        heads = aux.heads
        if (not isinstance(heads, list) or not heads or len(set(heads)) != len(heads)
                or not all(h in PATCH_AUX_HEADS for h in heads)):
            raise ConfigError(f"data.patch_aux.heads must be a non-empty list of distinct names from "
                              f"{', '.join(PATCH_AUX_HEADS)}, got {heads!r}")
        if self.data.objective != "answer" or self.data.relevance.target != "none":
            raise ConfigError("data.patch_aux trains next to the answer loss alone: set data.objective answer and "
                              "data.relevance.target none, or data.patch_aux.weight 0")
        if self.data.mode != "full" or len(self.data.resolutions) != 1:
            raise ConfigError("data.patch_aux labels every patch of the high-detail grid: it needs data.mode full "
                              f"and one resolution in data.resolutions, got mode {self.data.mode!r} and "
                              f"{self.data.resolutions}")
        if self.data.patch_number not in ("centre", "entity"):
            raise ConfigError(f"data.patch_number {self.data.patch_number!r}: choose centre or entity")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def expand_budgets(budgets: Any) -> list[int]:
    """data.budgets as the list of K each sample draws from: whole numbers >= 1, an item "LO-HI" giving every K
    from LO to HI in order (so [8-240] draws exactly as the 233 numbers written out would)."""
    def bad() -> ConfigError:
        return ConfigError(f"data.budgets must be a list of whole numbers >= 1 (high-detail tokens kept) or "
                           f"ranges LO-HI, e.g. [29, 58, 115, 190] or [8-240], got {budgets!r}")
    if not isinstance(budgets, list):
        raise bad()
    out: list[int] = []
    for item in budgets:
        if isinstance(item, int) and not isinstance(item, bool) and item >= 1:
            out.append(item)
            continue
        m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", item) if isinstance(item, str) else None
        if m is None or not 1 <= int(m[1]) <= int(m[2]):
            raise bad()
        out.extend(range(int(m[1]), int(m[2]) + 1))
    return out


def _build(cls, data: dict[str, Any], where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where or 'config'}; valid: {', '.join(known)}")
    kwargs = {}
    for name, value in data.items():
        default = getattr(cls(), name)
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value or {}, f"{where}.{name}".strip("."))
        elif isinstance(default, tuple) and isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = _coerce(value, str(known[name].type), f"{where}.{name}".strip("."))
    return cls(**kwargs)


def _coerce(value: Any, annotation: str, where: str) -> Any:
    """YAML reads "2e-5" (no dot) as a string: numbers are converted by the field's declared type."""
    if isinstance(value, str) and annotation.split(" |")[0] in ("float", "int"):
        try:
            return float(value) if annotation.startswith("float") else int(value)
        except ValueError:
            raise ConfigError(f"{where} must be a number, got {value!r}") from None
    if isinstance(value, int) and not isinstance(value, bool) and annotation.startswith("float"):
        return float(value)
    return value


def check_numbers(cfg: TrainConfig) -> None:
    """Types and ranges of the numbers (a typo or --set must not train nothing, or train on NaN)."""
    def number(where: str, value, lo=None, integer=False, allow_none=False, strict=False):
        if value is None and allow_none:
            return
        ok = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok or (not integer and not math.isfinite(value)):
            raise ConfigError(f"{where} must be a {'whole' if integer else 'finite'} number, got {value!r}")
        if lo is not None and (value <= lo if strict else value < lo):
            raise ConfigError(f"{where} must be {'>' if strict else '>='} {lo}, got {value!r}")

    run, o = cfg.run, cfg.optim
    number("run.max_steps", run.max_steps, 1, integer=True, allow_none=True)
    number("run.epochs", run.epochs, 0, strict=True)
    number("run.seed", run.seed, 0, integer=True)
    number("run.checkpoint_every", run.checkpoint_every, 1, integer=True)
    number("run.keep_checkpoints", run.keep_checkpoints, 0, integer=True)
    number("run.log_every", run.log_every, 1, integer=True)
    for name in ("lr_lora", "lr_other", "weight_decay", "eps", "min_lr_ratio"):
        number(f"optim.{name}", getattr(o, name), 0)
    number("optim.lr_vision", o.lr_vision, 0, allow_none=True)
    number("optim.max_grad_norm", o.max_grad_norm, 0, allow_none=True, strict=True)
    number("optim.warmup_steps", o.warmup_steps, 0, integer=True, allow_none=True)
    number("optim.warmup_ratio", o.warmup_ratio, 0, allow_none=True)
    if not (isinstance(o.betas, (tuple, list)) and len(o.betas) == 2):
        raise ConfigError(f"optim.betas must be two numbers, got {o.betas!r}")
    for b in o.betas:
        number("optim.betas", b, 0)
    number("lora.alpha", cfg.lora.alpha, 0)
    number("lora.dropout", cfg.lora.dropout, 0)
    number("data.mask_eps", cfg.data.mask_eps, 0)
    number("data.snap", cfg.data.snap, 1, integer=True)


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    return _build(TrainConfig, data, "").validate()


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``section.key=value`` (value parsed as YAML) into a config dict."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or "." not in key:
            raise ConfigError(f"override {item!r} must look like section.key=value, e.g. lora.rank=32")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({' '.join(str(e).split())})") from e
    return data


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML training config and apply ``section.key=value`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"training config {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path} is not valid YAML: {' '.join(str(e).split())}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"training config {path} must be a mapping of sections (model, lora, optim, data, "
                              f"run, ...), got {type(data).__name__}")
    return config_from_dict(apply_overrides(data, overrides or []))
