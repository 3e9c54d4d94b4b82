#!/usr/bin/env bash
# Attempt 6 of the small model (docs/small.md, "A sixth recipe"): attempt 5b's tower and stage-1a model,
# then reading questions alone with short answers (one entity, then 2 x 2 and 3 x 3 scenes), then every
# question type in full and lowres, then SHIRG's stage 2. The result is the bundled model. Run from the
# repository root after configs/small/attempt5/recipe.sh (which writes runs/small/attempt5b-stage1a/model).
set -euo pipefail
G="--preset small --label-place inside --label-grid 14 --label-jitter 2"

# 1. data: training seeds 41-45; validation seeds 31-33 (probes between stages); evaluation seed 2026
shirg entitygrid $G --occupancy 0.01 --types reading --seed 41 --n 8000 --out runs/small/data-grid/single-read
shirg entitygrid $G --grid 2x2 --types reading --seed 42 --n 6000 --out runs/small/data-grid/read2x2
shirg entitygrid $G --types reading --seed 43 --n 12000 --out runs/small/data-grid/read3x3
shirg entitygrid $G --seed 44 --n 12000 --out runs/small/data-grid/mixed
shirg entitygrid $G --grid 2x2 --types reading --seed 33 --n 256 --out runs/small/data-grid/val-read2x2
shirg entitygrid $G --types reading --seed 32 --n 256 --out runs/small/data-grid/val-read
shirg entitygrid $G --seed 2026 --n 500 --out runs/small/data-grid/eval

# 2. stages (each under 25 min on 2 CPU cores)
shirg train --config configs/small/attempt6/stage1r_single.yaml   # one entity, reading only, 300 steps
shirg train --config configs/small/attempt6/stage1r_grid.yaml     # 2x2 + 3x3, reading only, 1500 steps
shirg train --config configs/small/attempt6/stage1c.yaml          # every type, full + lowres
shirg train --config configs/small/attempt6/stage2.yaml           # SHIRG LoRA + coordinate embedding, reading only
# tried first, not shipped (docs/small.md): stage2_lr1e3.yaml, stage2_mixed.yaml

# 3. ship: the stage-1c model and the stage-2 adapter become the package's bundled model
rm -rf src/shirg/assets/small/model src/shirg/assets/small/adapter
cp -r runs/small/attempt6-stage1c/model src/shirg/assets/small/model
cp -r runs/small/attempt6-stage2/adapter src/shirg/assets/small/adapter

# 4. the evidence tables (docs/small.md): every mode on the stage-1c model; shirg with the adapter,
#    its ablations and the saliency score; the baselines with the adapter
A="--task entitygrid --data runs/small/data-grid/eval --gen-length 20 --steps 10 --block-length 20"
M=src/shirg/assets/small/model
shirg eval --model $M $A --modes lowres,full,shirg,uniform,pool,random,text-topk,saint,tome,visionzip,divprune \
  --out runs/small/eval-attempt6-stage1
shirg eval --model $M --adapter src/shirg/assets/small/adapter $A --modes shirg --ablation --out runs/small/eval-attempt6-stage2
shirg eval --model $M --adapter src/shirg/assets/small/adapter $A --modes shirg --score saliency \
  --out runs/small/eval-attempt6-stage2-saliency
shirg eval --model $M --adapter src/shirg/assets/small/adapter $A \
  --modes uniform,pool,random,text-topk,saint,tome,visionzip,divprune --out runs/small/eval-attempt6-stage2-baselines

# the probes quoted in docs/small.md (reading accuracy with the sample's own image vs another's)
shirg image-use --model runs/small/attempt6-single/model --records runs/small/data-grid/single/llava_train.json \
  --match "written on" --mode full --slots 4
shirg image-use --model runs/small/attempt6-grid/model --records runs/small/data-grid/val-read/llava_train.json \
  --mode full --slots 4
