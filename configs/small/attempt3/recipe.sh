#!/usr/bin/env bash
# Attempt 3 of the small model (docs/small.md, "A third recipe"). Differences from attempt 2
# (configs/small/attempt2/): whole tokenizer pieces for the words that start answers, one learning
# rate (1e-3) for tower, projector and LM, bf16 autocast; same data. Run from the repository root.
set -euo pipefail
shirg entitygrid --preset small --grid 1x2 --occupancy 1.0 --seed 11 --n 6000 --captions --cells 2 --out runs/small/data-cells/train1x2
shirg entitygrid --preset small --grid 2x2 --seed 12 --n 8000 --captions --cells 2 --out runs/small/data-cells/train2x2
shirg entitygrid --preset small --seed 1 --n 24000 --captions --cells 2 --out runs/small/data-cells/train
shirg entitygrid --preset small --seed 2026 --n 500 --out runs/small/data/eval
shirg make-tiny --config configs/small/attempt3/model.yaml --out runs/small/attempt3-init
shirg train --config configs/small/attempt3/stage1a.yaml
shirg train --config configs/small/attempt3/stage1.yaml
shirg eval --model runs/small/attempt3-stage1/model --task entitygrid --data runs/small/data/eval \
  --modes lowres,full --gen-length 40 --steps 20 --block-length 40 --out runs/small/eval-attempt3
