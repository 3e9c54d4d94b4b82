"""Confidence-threshold sampler, checked against its definition with scripted logits.

Definition (Fast-dLLM's parallel decoding): each step, every still-masked slot of the current block
whose confidence (softmax probability of its argmax token, mask id excluded) is >= the threshold is
committed, and the most confident masked slot always is; blocks are filled left to right.
"""

from __future__ import annotations

import math

import pytest
import torch

from shirg.errors import ConfigError
from shirg.model.sampler import generate, generate_threshold

V, MASK = 6, 5  # tokens 0..4 are real, 5 is the mask


def row(probs: dict[int, float]) -> list[float]:
    """Logits whose softmax over the real tokens is ``probs`` (the rest shared evenly), with the mask
    logit made the largest so that a sampler that forgot to suppress it would pick it."""
    rest = (1.0 - sum(probs.values())) / (V - 1 - len(probs))
    p = [probs.get(t, rest) for t in range(V - 1)]
    return [math.log(x) for x in p] + [50.0]


class Script:
    """Returns the scripted logits [B, L, V] of step i, and records the ids it was called with."""

    def __init__(self, steps: list[list[list[list[float]]]]) -> None:
        self.steps = [torch.tensor(s) for s in steps]
        self.calls: list[torch.Tensor] = []

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        self.calls.append(ids.clone())
        return self.steps[len(self.calls) - 1]


def test_commits_every_slot_at_or_above_threshold_and_at_least_one():
    # one row, 4 slots, one block; threshold 0.9
    step1 = [row({1: 0.95}), row({2: 0.5}), row({3: 0.92}), row({0: 0.3})]  # slots 0 and 2 pass
    step2 = [row({4: 0.99}), row({2: 0.6}), row({4: 0.99}), row({0: 0.7})]  # none passes among 1, 3: max is 3
    step3 = [row({4: 0.99}), row({1: 0.4}), row({4: 0.99}), row({4: 0.99})]  # slot 1 alone, below threshold
    script = Script([[step1], [step2], [step3]])
    ids, used = generate_threshold(script, 1, 4, 4, MASK, threshold=0.9)
    assert ids.tolist() == [[1, 1, 3, 0]]
    assert used.tolist() == [3] and len(script.calls) == 3
    assert script.calls[1].tolist() == [[1, MASK, 3, MASK]]
    assert script.calls[2].tolist() == [[1, MASK, 3, 0]]


def test_blocks_left_to_right_and_rows_count_their_own_steps():
    # 2 rows, 4 slots in 2 blocks of 2; threshold 0.8
    sure, unsure = 0.9, 0.4
    # step 1: row 0 fills block 0 at once; row 1 only its most confident slot (slot 1)
    s1 = [[row({1: sure}), row({2: sure}), row({3: sure}), row({3: sure})],
          [row({0: unsure}), row({2: 0.5}), row({3: sure}), row({3: sure})]]
    # step 2: row 0 is done with block 0 (commits nothing), row 1 fills slot 0
    s2 = [[row({4: sure}), row({4: sure}), row({4: sure}), row({4: sure})],
          [row({0: unsure}), row({4: sure}), row({3: sure}), row({3: sure})]]
    # step 3 (block 1): both rows fill both slots
    s3 = [[row({4: sure}), row({4: sure}), row({3: sure}), row({1: sure})],
          [row({4: sure}), row({4: sure}), row({2: sure}), row({2: sure})]]
    script = Script([s1, s2, s3])
    ids, used = generate_threshold(script, 2, 4, 2, MASK, threshold=0.8)
    assert ids.tolist() == [[1, 2, 3, 1], [0, 2, 2, 2]]
    assert used.tolist() == [2, 3]  # row 0: one step per block; row 1: two, then one
    # block 1 untouched while block 0 was filled; row 0 unchanged in the step it had nothing to commit
    assert (script.calls[0][:, 2:] == MASK).all() and (script.calls[1][:, 2:] == MASK).all()
    assert script.calls[2][0].tolist() == [1, 2, MASK, MASK]


def _table_model(batch: int, length: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(batch, length, V, generator=gen) * 3
    context = torch.randn(V, V, generator=gen)
    return lambda ids: base + context[ids].mean(1, keepdim=True)


def test_unreachable_threshold_is_one_slot_per_step_like_the_fixed_uniform_schedule():
    """With a threshold no confidence reaches, exactly the most confident slot is committed per step:
    the fixed sampler with one token per step (steps = gen_length, uniform) by definition."""
    model = _table_model(3, 12)
    ids, used = generate_threshold(model, 3, 12, 4, MASK, threshold=1.0)
    fixed = generate(model, 3, 12, 12, 4, MASK)
    assert torch.equal(ids, fixed)
    assert used.tolist() == [12, 12, 12]


def test_tiny_threshold_fills_each_block_in_one_step_with_the_argmax():
    model = _table_model(2, 8, seed=1)
    ids, used = generate_threshold(model, 2, 8, 4, MASK, threshold=1e-9)
    assert used.tolist() == [2, 2]  # one step per block
    # block 0 from the all-mask state, block 1 after block 0 is filled
    first = model(torch.full((2, 8), MASK))
    first[..., MASK] = float("-inf")
    assert torch.equal(ids[:, :4], first.argmax(-1)[:, :4])


def test_steps_used_never_exceeds_block_length_per_block_and_nothing_stays_masked():
    model = _table_model(4, 16, seed=2)
    for threshold in (0.3, 0.6, 0.95):
        ids, used = generate_threshold(model, 4, 16, 8, MASK, threshold=threshold)
        assert not (ids == MASK).any()
        assert ((used >= 2) & (used <= 16)).all()


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.5])
def test_bad_threshold(threshold):
    with pytest.raises(ConfigError, match="threshold"):
        generate_threshold(_table_model(1, 4), 1, 4, 4, MASK, threshold=threshold)


def test_bad_block_length():
    with pytest.raises(ConfigError, match="block_length 3"):
        generate_threshold(_table_model(1, 4), 1, 4, 3, MASK)
