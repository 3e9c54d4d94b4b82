#!/usr/bin/env bash
# Attempt 4 of the small model (docs/small.md, "A fourth recipe"): attempt 3's init, learning rates and
# schedule (configs/small/attempt3/), with the numbers drawn inside the shapes (--label-place inside)
# so the digit shares its patches with the shape the question names. Run from the repository root.
# So far only the data, the init and stage 1a have been run (docs/small.md says why stage 1b was not).
set -euo pipefail
shirg entitygrid --preset small --label-place inside --grid 1x2 --occupancy 1.0 --seed 11 --n 6000 --captions --cells 2 --out runs/small/data-inside/train1x2
shirg entitygrid --preset small --label-place inside --grid 2x2 --seed 12 --n 8000 --captions --cells 2 --out runs/small/data-inside/train2x2
shirg entitygrid --preset small --label-place inside --seed 1 --n 24000 --captions --cells 2 --out runs/small/data-inside/train
shirg entitygrid --preset small --label-place inside --seed 2026 --n 500 --out runs/small/data-inside/eval
[ -d runs/small/attempt3-init ] || shirg make-tiny --config configs/small/attempt3/model.yaml --out runs/small/attempt3-init
shirg train --config configs/small/attempt4/stage1a.yaml
shirg train --config configs/small/attempt4/stage1.yaml
shirg eval --model runs/small/attempt4-stage1/model --task entitygrid --data runs/small/data-inside/eval \
  --modes lowres,full --gen-length 40 --steps 20 --block-length 40 --out runs/small/eval-attempt4
