#!/usr/bin/env bash
# How the bundled small SHIRG-LaViDa (src/shirg/assets/small/) was made, and how its evidence table
# was measured. Run from the repository root; every step is a shirg command. About 70 min of training
# on 2 CPU cores (stage 1a ~16 min, stage 1b ~42 min, stage 2 ~12 min), then about 15 min of evaluation.
set -euo pipefail

# 1. data: training seeds 11, 12 and 1; the held-out evaluation seed 2026 is never used in training
shirg entitygrid --preset small --grid 1x2 --occupancy 1.0 --seed 11 --n 6000 --captions --out runs/small/data/train1x2
shirg entitygrid --preset small --grid 2x2 --seed 12 --n 8000 --captions --out runs/small/data/train2x2
shirg entitygrid --preset small --seed 1 --n 24000 --captions --out runs/small/data/train
shirg entitygrid --preset small --seed 2026 --n 500 --out runs/small/data/eval

# 2. the random init in LaViDa's layout, then stage 1 (whole model, full + lowres: 1a on the easy sets,
#    1b on everything) and stage 2 (SHIRG LoRA + coordinate embedding)
shirg make-tiny --config configs/small/model.yaml --out runs/small/init
shirg train --config configs/small/stage1a.yaml         # -> runs/small/stage1a/model, loss.png
shirg train --config configs/small/stage1.yaml          # -> runs/small/stage1/model, loss.png
shirg train --config configs/small/stage2.yaml          # -> runs/small/stage2/adapter, loss.png

# 3. ship: the stage-1 model and the stage-2 adapter become the package's bundled model
rm -rf src/shirg/assets/small/model src/shirg/assets/small/adapter
cp -r runs/small/stage1/model src/shirg/assets/small/model
cp -r runs/small/stage2/adapter src/shirg/assets/small/adapter
cp runs/small/stage1a/metrics.jsonl docs/small/stage1a_metrics.jsonl
cp runs/small/stage1/metrics.jsonl docs/small/stage1_metrics.jsonl
cp runs/small/stage2/metrics.jsonl docs/small/stage2_metrics.jsonl
cp runs/small/stage1a/loss.png docs/small/stage1a_loss.png
cp runs/small/stage1/loss.png docs/small/stage1_loss.png
cp runs/small/stage2/loss.png docs/small/stage2_loss.png

# 4. the evidence table: every mode on the 500 held-out samples with the stage-1 model, then SHIRG with
#    its stage-2 adapter and the SHIRG ablations (the adapter changes the tower, so the other modes
#    are compared on the model they were trained with)
MODES=lowres,full,shirg,uniform,pool,random,text-topk,saint,tome,visionzip,divprune
shirg eval --model src/shirg/assets/small/model --task entitygrid --data runs/small/data/eval \
  --modes "$MODES" --gen-length 40 --steps 20 --block-length 40 --out runs/small/eval-stage1
shirg eval --model src/shirg/assets/small/model --adapter src/shirg/assets/small/adapter --task entitygrid \
  --data runs/small/data/eval --modes shirg --ablation --gen-length 40 --steps 20 --block-length 40 --out runs/small/eval-stage2
