#!/usr/bin/env bash
# The EntityGrid TEST sets of the bundled small model (docs/protocol.md). Generated once; only ever
# reported, never used to choose a recipe, a setting or a checkpoint (use the dev seeds for that:
# 31, 32 and 2026; training seeds 1, 11, 12, 41-44; see configs/small/recipe.sh). Run from the repository root.
# Deterministic: the same command writes the same files (generator version 1, same Pillow version).
set -euo pipefail
# the generator flags of the bundled model's held-out set (configs/small/recipe.sh, step 1)
G="--preset small --label-place inside --label-grid 14 --label-jitter 2"
# reading questions on 3 x 3 scenes (the task the bundled model and adapter were trained for)
shirg entitygrid $G --types reading --seed 9001 --n 500 --out runs/test/read-9001
# every question type on the same kind of scenes
shirg entitygrid $G --seed 9002 --n 400 --out runs/test/all-9002
# dense scenes (docs/entitygrid.md, "Dense scenes"): 4 x 4 grids, every cell filled, look-alike distractors
shirg entitygrid $G --grid 4x4 --occupancy 1.0 --entity-scale 0.4 --repeat-labels --lookalikes 3 \
  --types reading --seed 9003 --n 300 --out runs/test/dense-read-9003
# crowded scenes: 6 x 6 grids, every cell filled (36 entities), look-alike distractors
shirg entitygrid $G --grid 6x6 --occupancy 1.0 --entity-scale 0.4 --repeat-labels --lookalikes 3 \
  --types reading --seed 9004 --n 300 --out runs/test/crowded-read-9004
