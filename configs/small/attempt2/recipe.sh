#!/usr/bin/env bash
# Attempt 2 of the small model's stage 1 (docs/small.md, "A second stage-1 recipe"): tried, not shipped.
# Differences from configs/small/recipe.sh: vision_centre init, tower lr 3e-4 + weight decay 0.05,
# two cell records per training image. Run from the repository root; about 51 min on 2 CPU cores.
set -euo pipefail
shirg entitygrid --preset small --grid 1x2 --occupancy 1.0 --seed 11 --n 6000 --captions --cells 2 --out runs/small/data-cells/train1x2
shirg entitygrid --preset small --grid 2x2 --seed 12 --n 8000 --captions --cells 2 --out runs/small/data-cells/train2x2
shirg entitygrid --preset small --seed 1 --n 24000 --captions --cells 2 --out runs/small/data-cells/train
shirg entitygrid --preset small --seed 2026 --n 500 --out runs/small/data/eval
shirg make-tiny --config configs/small/attempt2/model.yaml --out runs/small/attempt2-init
shirg train --config configs/small/attempt2/stage1a.yaml
shirg train --config configs/small/attempt2/stage1.yaml
shirg eval --model runs/small/attempt2-stage1/model --task entitygrid --data runs/small/data/eval \
  --modes lowres,full --gen-length 40 --steps 20 --block-length 40 --out runs/small/eval-attempt2
