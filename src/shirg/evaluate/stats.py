"""The evaluation protocol's statistics: intervals for scores, paired differences between modes.

Every mode of a run answers the same samples, so two modes are compared *paired*, sample by sample:

- a 0/1 score (accuracy, exact match, relaxed accuracy, per-type accuracy) gets a 95 % Wilson
  score interval; the difference of two modes on the same samples gets Newcombe's interval for
  paired proportions (Newcombe 1998, "Improved confidence intervals for the difference between
  binomial proportions based on paired data", method 10: Wilson limits of each proportion combined
  with the sample correlation phi, whose numerator AD - BC is shrunk to max(AD - BC - N/2, 0) when
  positive, as Newcombe does, so that a table without discordant pairs does not get a zero-width
  interval; no continuity correction of the Wilson limits) and the exact McNemar p (two-sided
  binomial test of the discordant pairs, b of one kind and c of the other, against 1/2);
- a score that is a mean of values in [0, 1] (F1 with partial credit, ANLS, VQA accuracy, evidence
  recall) gets the normal interval mean +- z * sd / sqrt(n), clipped to [0, 1], and a paired
  difference the normal interval of the mean per-sample difference, clipped to [-1, 1] (no McNemar
  p: it needs 0/1 outcomes).

Scores are kept as fractions here; the summary multiplies by 100 like every other score column.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Z95 = 1.959963984540054  # the 0.975 quantile of the standard normal


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of k successes in n trials (``(0, 1)`` when n is 0)."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= k <= n:
        raise ValueError(f"successes {k} must be within 0..{n}")
    p = k / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p: P(a Binomial(b + c, 1/2) count at least as far from the middle)."""
    m = b + c
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, i) for i in range(min(b, c) + 1)) / 2.0**m
    return min(1.0, 2.0 * tail)


def newcombe_paired(a: int, b: int, c: int, d: int, z: float = Z95) -> tuple[float, float, float]:
    """(difference, lower, upper) of p1 - p2 for paired 0/1 outcomes, Newcombe's method 10.

    ``a``: both right, ``b``: first right and second wrong, ``c``: first wrong and second right,
    ``d``: both wrong. p1 = (a + b) / n, p2 = (a + c) / n."""
    n = a + b + c + d
    if min(a, b, c, d) < 0:
        raise ValueError("cell counts must be >= 0")
    if n == 0:
        return 0.0, -1.0, 1.0
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson(a + b, n, z)
    l2, u2 = wilson(a + c, n, z)
    denom = (a + b) * (c + d) * (a + c) * (b + d)
    # phi's numerator shrunk by N / 2 when positive (Newcombe's correction; without it a table with no
    # discordant pairs gets a zero-width interval)
    num = a * d - b * c
    num = max(num - n / 2, 0.0) if num > 0 else num
    phi = num / math.sqrt(denom) if denom > 0 else 0.0
    diff = p1 - p2
    lower = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    upper = math.sqrt(max(0.0, (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2))
    return diff, max(-1.0, diff - lower), min(1.0, diff + upper)


def is_binary(values: Sequence[float]) -> bool:
    return all(v in (0, 1) for v in values)


def mean_interval(values: Sequence[float], z: float = Z95) -> tuple[float, float, float]:
    """(mean, lower, upper): the normal interval mean +- z * sd / sqrt(n) (sd with n - 1)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    if n == 1:
        return mean, mean, mean
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = z * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def interval(values: Sequence[float], z: float = Z95) -> dict:
    """A score's estimate and 95 % interval: Wilson for 0/1 values, normal for means of [0, 1] values."""
    values = [float(v) for v in values if v is not None]
    n = len(values)
    if n == 0:
        return {"value": None, "lo": None, "hi": None, "n": 0, "method": None}
    if is_binary(values):
        k = int(sum(values))
        lo, hi = wilson(k, n, z)
        return {"value": k / n, "lo": lo, "hi": hi, "n": n, "k": k, "method": "wilson"}
    mean, lo, hi = mean_interval(values, z)
    if all(0.0 <= v <= 1.0 for v in values):  # a mean of [0, 1] scores: the interval stays in [0, 1]
        lo, hi = max(0.0, lo), min(1.0, hi)
    return {"value": mean, "lo": lo, "hi": hi, "n": n, "method": "normal"}


def paired(first: Sequence[float], second: Sequence[float], z: float = Z95) -> dict:
    """first - second on the same samples (index i of both is sample i; pairs with a None are left out)."""
    if len(first) != len(second):
        raise ValueError(f"paired scores need equal lengths, got {len(first)} and {len(second)}")
    pairs = [(float(x), float(y)) for x, y in zip(first, second, strict=True) if x is not None and y is not None]
    n = len(pairs)
    if n == 0:
        return {"diff": None, "lo": None, "hi": None, "p": None, "n": 0, "method": None}
    if is_binary([v for p in pairs for v in p]):
        a = sum(1 for x, y in pairs if x and y)
        b = sum(1 for x, y in pairs if x and not y)
        c = sum(1 for x, y in pairs if not x and y)
        d = n - a - b - c
        diff, lo, hi = newcombe_paired(a, b, c, d, z)
        return {"diff": diff, "lo": lo, "hi": hi, "p": mcnemar_exact(b, c), "n": n, "a": a, "b": b, "c": c, "d": d,
                "method": "newcombe-paired+mcnemar-exact"}
    diff, lo, hi = mean_interval([x - y for x, y in pairs], z)
    if all(0.0 <= v <= 1.0 for p in pairs for v in p):
        lo, hi = max(-1.0, lo), min(1.0, hi)
    return {"diff": diff, "lo": lo, "hi": hi, "p": None, "n": n, "method": "normal-paired"}


def paired_difference(x: Sequence[int], y: Sequence[int], z: float = Z95) -> dict:
    """Two runs' 0/1 outcomes on the same samples, as ``shirg compare`` reports them: each run's
    accuracy with its Wilson interval, the paired difference y - x with Newcombe's interval, the
    discordant counts and McNemar's exact p."""
    if len(x) != len(y) or not x:
        raise ValueError(f"paired outcomes need equal, non-zero lengths, got {len(x)} and {len(y)}")
    if not is_binary([*x, *y]):
        raise ValueError("paired_difference takes 0/1 outcomes")
    n = len(x)
    d = paired(y, x, z)
    kx, ky = sum(map(bool, x)), sum(map(bool, y))
    return {
        "n": n, "base": kx / n, "base_ci": wilson(kx, n, z), "other": ky / n, "other_ci": wilson(ky, n, z),
        "diff": d["diff"], "diff_ci": (d["lo"], d["hi"]), "base_only": d["c"], "other_only": d["b"],
        "mcnemar_p": d["p"],
    }


def verdict(p: dict) -> str:
    """'above' / 'below' when the paired interval excludes 0, else 'not distinguishable'."""
    if p.get("lo") is None:
        return "-"
    if p["lo"] > 0:
        return "above"
    if p["hi"] < 0:
        return "below"
    return "not distinguishable"


def fmt_interval(d: dict | None, scale: float = 100.0, signed: bool = False) -> str:
    """'72.0 [67.9, 75.8]' (or '+1.5 [-2.8, +5.8]' with ``signed``); '-' when missing."""
    key = "diff" if d is not None and "diff" in d else "value"
    if d is None or d.get(key) is None:
        return "-"
    f = "{:+.1f}" if signed else "{:.1f}"
    return f"{f.format(d[key] * scale)} [{f.format(d['lo'] * scale)}, {f.format(d['hi'] * scale)}]"


def fmt_p(p: float | None) -> str:
    if p is None:
        return "-"
    return f"{p:.2g}" if p >= 0.001 else "<0.001"


def compare_modes(values: dict[str, dict[str, list]], reference: str | None = "full", z: float = Z95) -> dict:
    """Intervals of every metric of every mode, and every mode's paired difference against ``reference``.

    ``values``: mode -> metric -> per-sample values, every list in the same sample order (a None where a
    sample has no value of that metric, e.g. another question type). Returns ``{"reference",
    "confidence", "intervals": {mode: {metric: interval}}, "paired": {mode: {metric: paired}}}``;
    "paired" is empty when the reference mode is not among the modes."""
    out: dict = {"reference": reference, "confidence": 95 if z == Z95 else None,
                 "intervals": {m: {k: interval(v, z) for k, v in metrics.items()} for m, metrics in values.items()},
                 "paired": {}}
    ref = values.get(reference) if reference else None
    if ref is None:
        out["reference_missing"] = True
        return out
    for m, metrics in values.items():
        if m == reference:
            continue
        out["paired"][m] = {k: paired(v, ref[k], z) for k, v in metrics.items() if k in ref}
    return out


def in_percent(compared: dict) -> dict:
    """:func:`compare_modes`' result with estimates, limits and differences x 100 (the summary's unit), and
    every McNemar p also as display text (``p_text``)."""
    def scale(d: dict, keys: tuple[str, ...]) -> dict:
        return {k: (v * 100.0 if k in keys and v is not None else v) for k, v in d.items()}

    out = dict(compared, unit="percent")
    out["intervals"] = {m: {k: scale(iv, ("value", "lo", "hi")) for k, iv in per.items()}
                        for m, per in compared["intervals"].items()}
    out["paired"] = {m: {k: dict(scale(pd, ("diff", "lo", "hi")), p_text=fmt_p(pd.get("p"))) for k, pd in per.items()}
                     for m, per in compared["paired"].items()}
    return out
