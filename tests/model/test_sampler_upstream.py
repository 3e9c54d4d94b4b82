"""The sampler against LaViDa's / LLaDA's definitions, re-derived here independently.

Shift schedule: LaViDa computes sigma(t) = a t / (1 + (a - 1) t) in float32 on
``torch.linspace(0, 1, steps + 1)`` with a Python float ``a`` and truncates sigma * n to int64.
The reference below redoes that arithmetic in numpy float32, with ``torch.linspace``'s own
definition of the grid: step = (end - start) / (points - 1) in float32; the first half is
start + step * i, the second half end - step * (points - 1 - i), each rounded to float32 once (a
fused multiply-add: the float64 value of a float32 product plus a float32 term is exact here).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shirg.errors import ConfigError
from shirg.model.sampler import DEFAULT_SHIFT, generate, num_transfer_tokens

f32 = np.float32


def linspace_f32(points: int) -> np.ndarray:
    """torch.linspace(0, 1, points) for float32, element by element."""
    if points == 1:
        return np.zeros(1, dtype=f32)
    step = f32(1.0) / f32(points - 1)
    half = points // 2
    out = np.empty(points, dtype=f32)
    for i in range(points):
        if i < half:
            out[i] = f32(np.float64(step) * i + 0.0)
        else:
            out[i] = f32(1.0 - np.float64(step) * (points - 1 - i))
    return out


def reference_shift_counts(n: int, steps: int, a: float) -> list[int]:
    t = linspace_f32(steps + 1)
    # Python evaluates a - 1 in double, then torch applies both scalars in float32
    sigma = (f32(a) * t) / (f32(1.0) + f32(a - 1.0) * t)
    cumulative = (sigma * f32(n)).astype(np.int64)
    counts = np.maximum(np.diff(cumulative), 1)
    excess = int(counts.sum()) - n
    assert excess >= 0  # LaViDa asserts this; the shifts tested here never violate it
    j = 0
    while excess > 0:
        if counts[j % steps] > 1:
            counts[j % steps] -= 1
            excess -= 1
        j += 1
    return counts[::-1].tolist()


def test_linspace_reference_is_torch_linspace():
    for points in range(1, 300):
        assert np.array_equal(linspace_f32(points), torch.linspace(0, 1, points, dtype=torch.float32).numpy())


def test_issue_example_and_paper_shift():
    # LaViDa's eval scripts pass schedule__shift=0.33 (the float, not 1/3)
    assert num_transfer_tokens(16, 8, "shift", 0.33) == [5, 4, 2, 1, 1, 1, 1, 1]
    assert num_transfer_tokens(16, 8, "shift", 1 / 3) == [5, 3, 3, 1, 1, 1, 1, 1]
    assert reference_shift_counts(16, 8, 0.33) == [5, 4, 2, 1, 1, 1, 1, 1]


@pytest.mark.parametrize("a", [0.33, 3.0, 1 / 3, 0.5, 2.0, 5.0, 0.25, 1.5])
def test_shift_table_matches_float32_definition(a):
    checked = 0
    for n in list(range(1, 70)) + [96, 128, 200, 256]:
        for steps in sorted({1, 2, 3, 4, 5, 7, 8, 16, 32, 64, 128, n // 2 or 1, n}):
            if steps > n:
                continue
            got = num_transfer_tokens(n, steps, "shift", a)
            assert got == reference_shift_counts(n, steps, a), (n, steps, a)
            assert sum(got) == n and min(got) >= 1 and len(got) == steps
            checked += 1
    assert checked > 500


def test_default_shift_is_lavidas():
    assert DEFAULT_SHIFT == 3.0
    assert num_transfer_tokens(32, 16, "shift") == reference_shift_counts(32, 16, 3.0)
    # a > 1 commits more late, a < 1 more early
    late, early = num_transfer_tokens(32, 8, "shift", 3.0), num_transfer_tokens(32, 8, "shift", 0.33)
    assert late[0] < late[-1] and early[0] > early[-1]


def test_float32_shortfall_goes_to_the_last_step():
    # a = 0.1: float32 sigma(1) = 0.99999976, so int(sigma * n) = n - 1 (LaViDa's assertion fails here)
    t = torch.linspace(0, 1, 5)
    assert (0.1 * t / (1 + (0.1 - 1) * t))[-1].item() < 1
    counts = num_transfer_tokens(16, 4, "shift", 0.1)
    assert sum(counts) == 16 and min(counts) >= 1


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_shift(bad):
    with pytest.raises(ConfigError, match="shift"):
        num_transfer_tokens(8, 4, "shift", bad)


# ----------------------------------------------------------------------------- mask id


V, MASK = 12, 11


def reference_llada(logits_fn, gen_length, steps, block_length, mask_id, counts_fn):
    """LLaDA's low-confidence remasking loop as its paper / reference describe it, for one sample:
    x0 = argmax over the full vocabulary (the mask included), p = float64 softmax, candidates are
    masked slots up to the end of the current block, commit the top-n."""
    x = torch.full((1, gen_length), mask_id, dtype=torch.long)
    blocks = gen_length // block_length
    for b in range(blocks):
        counts = counts_fn(block_length, steps // blocks)
        for n in counts:
            logits = logits_fn(x)
            x0 = logits.argmax(-1)
            p = torch.softmax(logits.double(), -1).gather(-1, x0[..., None])[..., 0]
            p[:, (b + 1) * block_length :] = -np.inf
            mask_index = x == mask_id
            x0 = torch.where(mask_index, x0, x)
            conf = torch.where(mask_index, p, torch.tensor(-np.inf, dtype=p.dtype))
            idx = conf[0].topk(n).indices
            x[0, idx] = x0[0, idx]
    return x


class MaskLovingModel:
    """Logits where the mask id wins on some slots at some steps (depends on the current ids)."""

    def __init__(self, length: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.base = torch.randn(1, length, V, generator=g) * 2
        self.base[..., MASK] += torch.randn(1, length, generator=g) * 2 + 1.0
        self.ctx = torch.randn(V, V, generator=g)

    def __call__(self, ids):
        return self.base + self.ctx[ids].mean(1, keepdim=True)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("length,steps,block", [(8, 8, 8), (12, 6, 4), (16, 8, 8)])
def test_predict_mask_matches_llada_rule(seed, length, steps, block):
    model = MaskLovingModel(length, seed)
    got = generate(model, 1, length, steps, block, MASK, predict_mask=True)
    want = reference_llada(model, length, steps, block, MASK, lambda n, s: num_transfer_tokens(n, s))
    assert torch.equal(got, want)


def test_predict_mask_leaves_masks_and_default_never_does():
    hits = 0
    for seed in range(20):
        model = MaskLovingModel(8, seed)
        upstream = generate(model, 1, 8, 8, 8, MASK, predict_mask=True)
        ours = generate(model, 1, 8, 8, 8, MASK)
        assert not (ours == MASK).any()
        hits += int((upstream == MASK).any())
    assert hits > 0  # the model is built so that the mask wins somewhere


def test_shift_reaches_the_sampler():
    class Recorder:
        def __init__(self):
            self.masked = []

        def __call__(self, ids):
            self.masked.append(int((ids == MASK).sum()))
            return torch.randn(1, ids.shape[1], V, generator=torch.Generator().manual_seed(len(self.masked)))

    rec = Recorder()
    generate(rec, 1, 16, 8, 16, MASK, schedule="shift", shift=0.33)
    committed = [a - b for a, b in zip(rec.masked, rec.masked[1:] + [0], strict=True)]
    assert committed == [5, 4, 2, 1, 1, 1, 1, 1]
