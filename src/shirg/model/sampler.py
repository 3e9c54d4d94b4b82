"""LLaDA's low-confidence remasking sampler (docs/lavida_facts.md section 4).

The answer starts as ``gen_length`` mask tokens and is filled block by block, left to right. Within
a block each step predicts every masked slot and commits the most confident ones; a committed
token is never remasked. The model is reached only through ``logits_fn``, so the same sampler runs
a full forward or the prefix-cached one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from shirg.errors import ConfigError

SCHEDULES = ("uniform", "shift")


DEFAULT_SHIFT = 3.0  # LaViDa's sampler default when the shift schedule gets no shift (its eval scripts pass 0.33)


def num_transfer_tokens(n: int, steps: int, schedule: str = "uniform", shift: float = DEFAULT_SHIFT) -> list[int]:
    """How many of ``n`` masked slots to commit at each of ``steps`` steps; sums to ``n``.

    uniform: n // steps each, the first n % steps steps one more (LLaDA).
    shift: cumulative share sigma(t) = a t / (1 + (a - 1) t) with a = ``shift`` (a float), on
    t = linspace(0, 1, steps + 1), all in float32 as LaViDa computes it (``torch.linspace``, the
    Python float a applied to the float32 tensor); counts are the differences of int(sigma * n),
    raised to at least 1, the excess taken back one at a time from the entries > 1 (first to last,
    repeating), then reversed. a < 1 commits more tokens early (0.33: n=16, steps=8 ->
    [5, 4, 2, 1, 1, 1, 1, 1]); a > 1 commits more late. Where float32 rounding leaves sigma(1) * n
    just below n (LaViDa stops on an assertion there), the missing tokens go to the last interval.
    """
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown schedule {schedule!r}; valid schedules are {', '.join(SCHEDULES)}.")
    if steps < 1 or n < 1:
        raise ConfigError(f"need at least one token and one step, got n={n}, steps={steps}.")
    if steps > n:
        raise ConfigError(
            f"{steps} steps for {n} tokens would leave steps that commit nothing; use steps <= {n}."
        )
    if schedule == "uniform":
        base, extra = divmod(n, steps)
        return [base + (i < extra) for i in range(steps)]
    if not shift > 0 or shift == float("inf"):
        raise ConfigError(f"the schedule shift must be a positive finite number, got {shift}.")
    t = torch.linspace(0, 1, steps + 1, dtype=torch.float32)
    sigma = float(shift) * t / (1 + (float(shift) - 1) * t)
    cumulative = (sigma * n).to(torch.int64).tolist()
    counts = [max(1, hi - lo) for lo, hi in zip(cumulative, cumulative[1:], strict=False)]
    excess, i = sum(counts) - n, 0
    if excess < 0:
        counts[-1] -= excess
    while excess > 0:
        if counts[i] > 1:
            counts[i] -= 1
            excess -= 1
        i = (i + 1) % steps
    return counts[::-1]


def _gumbel_argmax(logits: Tensor, temperature: float, generator: torch.Generator | None) -> Tensor:
    """argmax of logits / T + Gumbel noise, in float64 (the same draw as LLaDA's exp(l) / (-log u)^T)."""
    u = torch.rand(logits.shape, generator=generator, dtype=torch.float64, device=logits.device)
    return (logits.double() / temperature - torch.log(-torch.log(u))).argmax(-1)


@torch.no_grad()
def generate(
    logits_fn: Callable[[Tensor], Tensor],
    batch_size: int,
    gen_length: int,
    steps: int,
    block_length: int,
    mask_id: int,
    temperature: float = 0.0,
    schedule: str = "uniform",
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    shift: float = DEFAULT_SHIFT,
    predict_mask: bool = False,
) -> Tensor:
    """Fill ``gen_length`` answer slots; returns ids long [B, gen_length].

    logits_fn(answer_ids long [B, gen_length]) -> logits [B, gen_length, V]. ``steps`` are split
    evenly over the gen_length / block_length blocks; ``shift`` is the shift schedule's a.
    Temperature 0 is deterministic argmax; above 0, Gumbel noise is drawn from ``generator``.
    Confidence is the float64 softmax probability of the prediction (as in LLaDA).

    ``predict_mask`` False (ours): the mask id is never predicted, so every block ends filled.
    True (LLaDA / LaViDa): the mask id competes like any token; a committed slot whose argmax is the
    mask stays masked and stays a candidate in the following steps and blocks, and slots still
    masked at the end come back as the mask id.
    """
    if block_length < 1 or gen_length % block_length:
        raise ConfigError(
            f"gen_length {gen_length} must be a positive multiple of block_length {block_length}."
        )
    num_blocks = gen_length // block_length
    if steps % num_blocks:
        raise ConfigError(
            f"steps {steps} must split evenly over {num_blocks} blocks (gen_length {gen_length} / "
            f"block_length {block_length}); use a multiple of {num_blocks}."
        )
    counts = num_transfer_tokens(block_length, steps // num_blocks, schedule, shift)
    ids = torch.full((batch_size, gen_length), mask_id, dtype=torch.long, device=device)
    rows = torch.arange(batch_size, device=ids.device)[:, None]
    for block in range(num_blocks):
        in_block = torch.zeros(gen_length, dtype=torch.bool, device=ids.device)
        # predict_mask: slots left masked in earlier blocks stay candidates (LLaDA's rule)
        in_block[0 if predict_mask else block * block_length : (block + 1) * block_length] = True
        for n in counts:
            logits = logits_fn(ids)
            if not predict_mask:
                logits = logits.clone()
                logits[..., mask_id] = float("-inf")
            if temperature > 0:
                predicted = _gumbel_argmax(logits, temperature, generator)
            else:
                predicted = logits.argmax(-1)
            probs = torch.softmax(logits.double(), dim=-1)
            confidence = probs.gather(-1, predicted[..., None]).squeeze(-1)
            masked = ids == mask_id
            candidates = masked & in_block
            confidence = confidence.masked_fill(~candidates, float("-inf"))
            chosen = confidence.topk(n, dim=-1).indices
            ids[rows, chosen] = torch.where(masked, predicted, ids)[rows, chosen]
    return ids


def truncate_at_stop(ids: list[int], stop_ids: set[int]) -> list[int]:
    """ids up to (not including) the first stop id."""
    for i, token in enumerate(ids):
        if token in stop_ids:
            return ids[:i]
    return list(ids)


SAMPLERS = ("fixed", "threshold")


@torch.no_grad()
def generate_threshold(
    logits_fn: Callable[[Tensor], Tensor],
    batch_size: int,
    gen_length: int,
    block_length: int,
    mask_id: int,
    threshold: float = 0.9,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Confidence-threshold decoding (Fast-dLLM's parallel decoding); returns (ids long [B, gen_length],
    steps used long [B]).

    Blocks are filled left to right as in :func:`generate`. At each step every still-masked slot of the
    current block whose confidence (the softmax probability of its predicted token, mask id excluded)
    is >= ``threshold`` is committed, and the most confident masked slot always is, so a block of
    ``block_length`` slots takes between 1 and ``block_length`` steps. A row whose block is complete
    commits nothing while the other rows of the batch finish theirs; its steps used counts only the
    steps in which it still had masked slots. The prefix cache behind ``logits_fn`` is never changed.
    """
    if not 0.0 < threshold <= 1.0:
        raise ConfigError(f"threshold must be in (0, 1], got {threshold}")
    if block_length < 1 or gen_length % block_length:
        raise ConfigError(
            f"gen_length {gen_length} must be a positive multiple of block_length {block_length}."
        )
    ids = torch.full((batch_size, gen_length), mask_id, dtype=torch.long, device=device)
    used = torch.zeros(batch_size, dtype=torch.long, device=ids.device)
    for block in range(gen_length // block_length):
        in_block = torch.zeros(gen_length, dtype=torch.bool, device=ids.device)
        in_block[block * block_length : (block + 1) * block_length] = True
        while True:
            candidates = (ids == mask_id) & in_block
            active = candidates.any(-1)
            if not active.any():
                break
            logits = logits_fn(ids).clone()
            logits[..., mask_id] = float("-inf")
            if temperature > 0:
                predicted = _gumbel_argmax(logits, temperature, generator)
            else:
                predicted = logits.argmax(-1)
            probs = torch.softmax(logits.float(), dim=-1)
            confidence = probs.gather(-1, predicted[..., None]).squeeze(-1)
            confidence = confidence.masked_fill(~candidates, float("-inf"))
            commit = candidates & (confidence >= threshold)
            best = confidence.argmax(-1, keepdim=True)
            commit |= torch.zeros_like(commit).scatter_(1, best, True) & candidates
            ids = torch.where(commit, predicted, ids)
            used += active.long()
    return ids, used
