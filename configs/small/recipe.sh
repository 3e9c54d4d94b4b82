#!/usr/bin/env bash
# How the bundled small SHIRG-LaViDa (src/shirg/assets/small/) was made, and how its first version's evidence tables
# (docs/small.md) were measured. Run from the repository root; every step is a shirg command. Each
# training stage takes under 25 min on 2 CPU cores (about 2 h 30 min in all), then about 30 min of evaluation.
set -euo pipefail
G="--preset small --label-place inside --label-grid 14 --label-jitter 2"

# 1. data: training seeds 11, 12, 1 (stage 0, stage 1a) and 41-44 (stages 1r, 1c, 2); validation seeds 32
#    and 31 (the reading probes of step 5); the held-out evaluation seed 2026 is never used in training
shirg entitygrid $G --grid 1x2 --occupancy 1.0 --seed 11 --n 6000 --captions --cells 2 --out runs/small/data/train1x2
shirg entitygrid $G --grid 2x2 --seed 12 --n 8000 --captions --cells 2 --out runs/small/data/train2x2
shirg entitygrid $G --seed 1 --n 24000 --captions --cells 2 --out runs/small/data/train
shirg entitygrid $G --occupancy 0.01 --types reading --seed 41 --n 8000 --out runs/small/data/single-read
shirg entitygrid $G --grid 2x2 --types reading --seed 42 --n 6000 --out runs/small/data/read2x2
shirg entitygrid $G --types reading --seed 43 --n 12000 --out runs/small/data/read3x3
shirg entitygrid $G --seed 44 --n 12000 --out runs/small/data/mixed
shirg entitygrid $G --types reading --seed 32 --n 256 --out runs/small/data/val-read
shirg entitygrid $G --occupancy 0.01 --seed 31 --n 512 --out runs/small/data/val-single
shirg entitygrid $G --seed 2026 --n 500 --out runs/small/data/eval

# 2. the random init in LaViDa's layout, then the stages (configs/small/*.yaml say what each trains)
shirg make-tiny --config configs/small/model.yaml --out runs/small/init
shirg train --config configs/small/stage0.yaml            # tower alone, per-patch labels, 800 steps
shirg train --config configs/small/stage0_spread.yaml     # the same, every patch of an entity, 400 steps
shirg train --config configs/small/stage1a.yaml           # projector + LM, easy sets, 900 steps
shirg train --config configs/small/stage1r_single.yaml    # reading, one entity, 300 steps
shirg train --config configs/small/stage1r_grid.yaml      # reading, 2x2 + 3x3, 1500 steps
shirg train --config configs/small/stage1c.yaml           # every question type, full + lowres, 700 steps
shirg train --config configs/small/stage2.yaml            # SHIRG LoRA + coordinate embedding, 400 steps

# 3. ship. The first bundled model was stage 1c's model with stage 2's adapter (runs/small/stage1c/model,
#    runs/small/stage2/adapter); steps 4 and 5 below and configs/evidence/recipe.sh up to its step 16 measure it.
#    It was replaced after configs/evidence/recipe.sh's step 17 met its test rule: the first model trained on
#    colour look-alike reading (step 11, 1,500 steps), then given every question type back (step 15), with an
#    adapter of stage 2's LoRA and coordinate embedding plus a box-target relevance head (step 17, 150 steps)
shirg entitygrid $G --lookalikes 2 --types reading --seed 54 --n 3000 --out runs/colour/data/read3x3-look-54
shirg entitygrid $G --types reading --seed 43 --n 4000 --out runs/relevance/data/read3x3-43
shirg train --config configs/evidence/host_colour.yaml --stop-after 1500   # constant lr: as the run resumed to 1,500
shirg export --model runs/small/stage1c/model --checkpoint runs/colour/host/checkpoints/step-00001500 \
  --out runs/colour/host-1500
shirg train --config configs/evidence/host_colour_mixed.yaml               # writes runs/colour15/host/model
shirg train --config configs/evidence/head_box_lora.yaml --model runs/colour15/host/model \
  --output-dir runs/colour17/adapter-run
rm -rf src/shirg/assets/small/model src/shirg/assets/small/adapter
cp -r runs/colour15/host/model src/shirg/assets/small/model
cp -r runs/colour17/adapter-run/adapter src/shirg/assets/small/adapter
# the demo sample: the first reading question of the held-out set (seed 2026) that the shipped model answers right
# in `full` and `shirg` under `shirg demo`'s settings (eg2026-000007; the first model's was eg2026-000003)

# 4. the evidence tables: every mode on the stage-1c model; shirg with the adapter, its ablations and
#    the saliency score; the baselines with the adapter
A="--task entitygrid --data runs/small/data/eval --gen-length 20 --steps 10 --block-length 20"
M=runs/small/stage1c/model   # the first bundled model
shirg eval --model $M $A --modes lowres,full,shirg,uniform,pool,random,text-topk,saint,tome,visionzip,divprune \
  --out runs/small/eval-stage1
shirg eval --model $M --adapter runs/small/stage2/adapter $A --modes shirg --ablation --out runs/small/eval-stage2
shirg eval --model $M --adapter runs/small/stage2/adapter $A --modes shirg --score saliency \
  --out runs/small/eval-stage2-saliency
shirg eval --model $M --adapter runs/small/stage2/adapter $A \
  --modes uniform,pool,random,text-topk,saint,tome,visionzip,divprune --out runs/small/eval-stage2-baselines

# 5. the reading probes (accuracy with the sample's own image vs another's): after stage 1r (one entity)
#    and after stage 1r (grid)
shirg image-use --model runs/small/stage1r-single/model --records runs/small/data/val-single/llava_train.json \
  --match "written on" --mode full --slots 4
shirg image-use --model runs/small/stage1r-grid/model --records runs/small/data/val-read/llava_train.json \
  --mode full --slots 4
