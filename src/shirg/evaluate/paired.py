"""Paired comparison of two runs on the same samples: accuracies with Wilson intervals, the paired
difference with the Agresti-Min interval, answer agreement, and McNemar's exact test.

For 0/1 outcomes x (base) and y (other) on the same n samples, with b = #(x=1, y=0) and
c = #(x=0, y=1) the discordant pairs:

- Wilson score interval of a proportion p = k / n at z = 1.96:
  (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n).
- Paired difference y - x = (c - b) / n; 95 % interval by Agresti & Min (2005): add 1/2 to each of
  the four cells (n + 2 samples), then the Wald interval of the paired difference,
  d' +- z sqrt((b' + c') - (c' - b')^2 / n') / n'.
- McNemar's exact test: two-sided binomial test of b against Binomial(b + c, 1/2),
  p = min(1, 2 * sum_{k <= min(b, c)} C(b + c, k) / 2^(b + c)); p = 1 when b + c = 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of k successes in n trials."""
    if n <= 0:
        return (math.nan, math.nan)
    p = k / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    denom = 1 + z * z / n
    return ((centre - half) / denom, (centre + half) / denom)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts."""
    m = b + c
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, k) for k in range(min(b, c) + 1)) / 2**m
    return min(1.0, 2 * tail)


def paired_difference(x: Sequence[int], y: Sequence[int], z: float = Z95) -> dict:
    """Everything about y - x for paired 0/1 outcomes (see the module docstring)."""
    if len(x) != len(y) or not x:
        raise ValueError(f"paired outcomes need equal, non-zero lengths, got {len(x)} and {len(y)}")
    n = len(x)
    b = sum(1 for u, v in zip(x, y, strict=True) if u and not v)
    c = sum(1 for u, v in zip(x, y, strict=True) if v and not u)
    bb, cc, nn = b + 0.5, c + 0.5, n + 2
    d_adj = (cc - bb) / nn
    se = math.sqrt(max((bb + cc) - (cc - bb) ** 2 / nn, 0.0)) / nn
    kx, ky = sum(map(bool, x)), sum(map(bool, y))
    return {
        "n": n, "base": kx / n, "base_ci": wilson(kx, n, z), "other": ky / n, "other_ci": wilson(ky, n, z),
        "diff": (c - b) / n, "diff_ci": (d_adj - z * se, d_adj + z * se),
        "base_only": b, "other_only": c, "mcnemar_p": mcnemar_exact(b, c),
    }
