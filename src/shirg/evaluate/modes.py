"""Named evaluation modes: the inference modes plus SHIRG ablation variants (one switch each)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from shirg.errors import ConfigError
from shirg.model.options import HIRES_MODES, MODES, VisualOptions


@dataclass
class ModeSpec:
    """``name`` labels the results column; ``mode`` is what :func:`shirg.model.answer.answer` runs."""

    name: str
    mode: str
    options: VisualOptions

    @property
    def hires(self) -> bool:
        return self.mode in HIRES_MODES

    def describe(self) -> dict:
        return {"name": self.name, "mode": self.mode, "options": dataclasses.asdict(self.options)}


def _weights(opts: VisualOptions, term: int, value: float | None) -> dict:
    w = list(opts.weights)
    w[term] = -w[term] if value is None else value
    return {"weights": tuple(w)}


# name -> (description, VisualOptions changes relative to the run's SHIRG options)
ABLATIONS = {
    "shirg-no-coverage": ("no per-cell coverage guarantee", lambda o: {"coverage": False}),
    "shirg-no-merge": ("no 2 x 2 neighbour merging", lambda o: {"merge": False}),
    "shirg-no-coords": ("no coordinate embedding", lambda o: {"coords": False}),
    "shirg-no-sim": ("text-relevance term off", lambda o: _weights(o, 0, 0.0)),
    "shirg-no-nbr": ("neighbour-distance term off", lambda o: _weights(o, 1, 0.0)),
    "shirg-no-ctr": ("centre-distance term off", lambda o: _weights(o, 2, 0.0)),
    "shirg-nbr-flip": ("neighbour term with the opposite sign", lambda o: _weights(o, 1, None)),
    "shirg-saliency": ("saliency score instead of the question's text score", lambda o: {"score": "saliency"}),
}


def build_modes(names: list[str], options: VisualOptions) -> list[ModeSpec]:
    """Specs for the given names (inference modes or ablation names), validated before any work."""
    if not names:
        raise ConfigError("no modes given; e.g. --modes lowres,full,shirg")
    if len(set(names)) != len(names):
        raise ConfigError(f"modes repeat in {','.join(names)}")
    specs = []
    for name in names:
        if name in MODES:
            spec = ModeSpec(name, name, dataclasses.replace(options))
        elif name in ABLATIONS:
            changes = ABLATIONS[name][1](options)
            spec = ModeSpec(name, "shirg", dataclasses.replace(options, **changes))
        else:
            raise ConfigError(f"unknown mode {name!r}; valid modes: {', '.join(MODES)}; "
                              f"SHIRG ablations: {', '.join(ABLATIONS)}")
        spec.options.validate(spec.mode)
        specs.append(spec)
    return specs
