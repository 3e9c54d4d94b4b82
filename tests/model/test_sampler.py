"""Low-confidence remasking sampler, checked step by step against a fixed random "model".

The fake model is a pure function of the answer ids: a fixed per-slot logit table plus a term that
depends on the tokens committed so far, so every step sees different logits.
"""

from __future__ import annotations

import pytest
import torch

from shirg.errors import ConfigError
from shirg.model.sampler import generate, num_transfer_tokens, truncate_at_stop

V, MASK = 24, 23


class TableModel:
    """logits[b, j] = base[b, j] + context[ids[b]].mean over slots; records every call."""

    def __init__(self, batch: int, length: int, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.base = torch.randn(batch, length, V, generator=gen) * 3
        self.base[..., MASK] += 10.0  # the mask token would win everywhere if it were not suppressed
        self.context = torch.randn(V, V, generator=gen)
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        logits = self.base + self.context[ids].mean(1, keepdim=True)
        self.calls.append((ids.clone(), logits.clone()))
        return logits


def test_uniform_schedule():
    assert num_transfer_tokens(10, 4) == [3, 3, 2, 2]
    assert num_transfer_tokens(8, 8) == [1] * 8
    for n in range(1, 40):
        for steps in range(1, n + 1):
            counts = num_transfer_tokens(n, steps)
            assert sum(counts) == n and len(counts) == steps and max(counts) - min(counts) <= 1


def test_shift_schedule():
    assert num_transfer_tokens(32, 16, "shift", 0.33) == [6, 4, 4, 3, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    for shift in (0.33, 3.0):
        for n in range(1, 60):
            for steps in range(1, n + 1):
                counts = num_transfer_tokens(n, steps, "shift", shift)
                assert sum(counts) == n and len(counts) == steps and min(counts) >= 1


def test_schedule_errors():
    with pytest.raises(ConfigError, match="uniform, shift"):
        num_transfer_tokens(8, 4, "cosine")
    with pytest.raises(ConfigError, match="steps <= 8"):
        num_transfer_tokens(8, 9)


def test_generate_argument_errors():
    model = TableModel(1, 16)
    with pytest.raises(ConfigError, match="block_length 5"):
        generate(model, 1, 16, 8, 5, MASK)
    with pytest.raises(ConfigError, match="steps 6 .* 4 blocks"):
        generate(model, 1, 16, 6, 4, MASK)
    with pytest.raises(ConfigError, match="steps <= 4"):
        generate(model, 1, 16, 32, 4, MASK)


@pytest.mark.parametrize("schedule", ["uniform", "shift"])
def test_each_step_commits_most_confident_slots_of_current_block(schedule):
    batch, length, block, steps = 3, 16, 8, 10
    model = TableModel(batch, length)
    out = generate(model, batch, length, steps, block, MASK, schedule=schedule)
    counts = num_transfer_tokens(block, steps // 2, schedule)
    assert len(model.calls) == steps
    states = [ids for ids, _ in model.calls] + [out]
    for step, (ids, logits) in enumerate(model.calls):
        after = states[step + 1]
        current = step // len(counts)
        lo, hi = current * block, (current + 1) * block
        masked = ids == MASK
        # Block order: earlier blocks complete, later blocks untouched.
        assert not masked[:, :lo].any() and masked[:, hi:].all() and not (after[:, hi:] != MASK).any()
        # Committed tokens never change.
        assert torch.equal(after[~masked], ids[~masked])
        new = masked & (after != MASK)
        assert (new.sum(1) == counts[step % len(counts)]).all()
        suppressed = logits.clone()
        suppressed[..., MASK] = float("-inf")
        probs = suppressed.softmax(-1)
        confidence, predicted = probs.max(-1)
        assert torch.equal(after[new], predicted[new])
        for b in range(batch):
            left = masked[b, lo:hi] & ~new[b, lo:hi]
            if left.any():
                assert confidence[b, lo:hi][new[b, lo:hi]].min() >= confidence[b, lo:hi][left].max()
    assert not (out == MASK).any()


def test_deterministic_at_temperature_zero():
    a = generate(TableModel(2, 12), 2, 12, 6, 6, MASK)
    b = generate(TableModel(2, 12), 2, 12, 6, 6, MASK)
    assert torch.equal(a, b) and a.dtype == torch.long and a.shape == (2, 12)


def test_temperature_uses_the_given_generator():
    def run(seed):
        torch.manual_seed(seed + 1000)  # the global RNG must not matter
        gen = torch.Generator().manual_seed(seed)
        return generate(TableModel(4, 16), 4, 16, 8, 16, MASK, temperature=5.0, generator=gen)

    first = run(0)
    assert torch.equal(first, run(0))
    assert not torch.equal(first, run(1))
    assert not (first == MASK).any()


def test_truncate_at_stop():
    assert truncate_at_stop([5, 6, 7, 2, 8, 2], {2, 9}) == [5, 6, 7]
    assert truncate_at_stop([9], {2, 9}) == []
    assert truncate_at_stop([5, 6], {2}) == [5, 6]
