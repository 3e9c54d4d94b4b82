#!/usr/bin/env bash
# The H100 probe of docs/small.md ("The GPU probe"), as it ran: four concurrent `shirg train` runs (attempt
# 3's recipe on numbers under / inside the shapes, with / without captions), then `shirg eval` on 200
# held-out samples per run. Made for the workplace's device machine: a bare python3 with torch, a
# rapidfuzz wheel in .whl/, output under $OUT. BUDGET: seconds until the last evaluation must end.
# Its 600-s call ended at about step 274 of 1900 in every run (about 9 samples/s each), before any eval.
T0=$(date +%s); DEADLINE=$((T0 + ${BUDGET:-540}))
PY=${PY:-python3}; S1A=${S1A:-700}; S1B=${S1B:-1200}; NS=${NS:-1}; LIM=${LIM:-200}
[ -n "$SKIP_PIP" ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
shirg() { $PY -c "import sys; from shirg.cli import main; sys.exit(main())" "$@"; }
W=/tmp/w; mkdir -p $W; L=/tmp/logs; mkdir -p $L
nvidia-smi --query-gpu=name,memory.used --format=csv
for P in under inside; do
  shirg entitygrid --preset small --label-place $P --grid 1x2 --occupancy 1.0 --seed 11 --n $((6000/NS)) --captions --cells 2 --out $W/$P/train1x2 >/dev/null 2>&1 &
  shirg entitygrid --preset small --label-place $P --grid 2x2 --seed 12 --n $((8000/NS)) --captions --cells 2 --out $W/$P/train2x2 >/dev/null 2>&1 &
  shirg entitygrid --preset small --label-place $P --seed 1 --n $((24000/NS)) --captions --cells 2 --out $W/$P/train >/dev/null 2>&1 &
  shirg entitygrid --preset small --label-place $P --seed 2026 --n $((500/NS)) --out $W/$P/eval >/dev/null 2>&1 &
done
shirg make-tiny --config configs/small/attempt3/model.yaml --out $W/init > $L/init.log 2>&1
wait; echo "data+init $(( $(date +%s) - T0 )) s"
$PY - <<PY
import json, glob
for p in glob.glob("$W/*/train*/llava_train.json"):
    recs = json.load(open(p))
    json.dump([r for r in recs if not r["id"].endswith("-caption")], open(p.replace("llava_train", "nocap"), "w"))
for P in ("under", "inside"):
    for cap, js in (("cap", "llava_train.json"), ("nocap", "nocap.json")):
        for name, sets in (("easy", ["train1x2", "train2x2"]), ("train", ["train1x2", "train2x2", "train"])):
            with open(f"$W/mix_{P}_{cap}_{name}.yaml", "w") as f:
                f.write("sources:\n")
                for s in sets:
                    f.write(f"  - {{name: {s}, json: $W/{P}/{s}/{js}, image_root: $W/{P}/{s}, sample: all}}\n")
PY
pack() {  # everything small so far into one tarball ($OUT keeps what exists if the command is killed)
  ( cd $W && for d in */s1* */e1*; do
      [ -f $d/metrics.jsonl ] && cp $d/metrics.jsonl $L/$(echo $d | tr / _).jsonl
      [ -f $d/summary.md ] && cp $d/summary.md $L/$(echo $d | tr / _).md && cp $d/predictions.jsonl $L/$(echo $d | tr / _).pred.jsonl
    done
    tar czf $OUT/probe.tmp.tgz -C /tmp logs && mv $OUT/probe.tmp.tgz $OUT/probe.tgz ) 2>/dev/null
}
variant() {  # $1 label place, $2 cap|nocap
  V=$1-$2; R=$W/$V; C="--set data.num_workers=3 --set run.progress=false"
  shirg train --config configs/small/attempt3/stage1a.yaml $C --set model.path=$W/init --set data.mixture=$W/mix_$1_$2_easy.yaml --set run.output_dir=$R/s1a --set run.max_steps=$S1A > $L/$V-s1a.log 2>&1
  t1=$(date +%s)
  shirg train --config configs/small/attempt3/stage1.yaml $C --set model.path=$R/s1a/model --set data.mixture=$W/mix_$1_$2_train.yaml --set run.output_dir=$R/s1b --set run.max_steps=$S1B > $L/$V-s1b.log 2>&1
  t2=$(date +%s); echo "$V s1b $S1B steps in $((t2 - t1)) s, at $((t2 - T0)) s"
  shirg eval --model $R/s1b/model --task entitygrid --data $W/$1/eval --modes lowres,full --limit $LIM --gen-length 40 --steps 20 --block-length 40 --overlays 0 --no-progress --out $R/e1b > $L/$V-e1b.log 2>&1
  pack
  left=$(( DEADLINE - $(date +%s) - 75 )); n=$(( left * S1B / (t2 - t1 + 1) * 85 / 100 ))
  echo "$V s1c: $left s left, $n steps, at $(( $(date +%s) - T0 )) s"
  if [ $n -gt 200 ]; then
    shirg train --config configs/small/attempt3/stage1.yaml $C --set model.path=$R/s1b/model --set data.mixture=$W/mix_$1_$2_train.yaml --set run.output_dir=$R/s1c --set run.max_steps=$n --set run.checkpoint_every=100000 > $L/$V-s1c.log 2>&1
    timeout $(( DEADLINE - $(date +%s) )) shirg eval --model $R/s1c/model --task entitygrid --data $W/$1/eval --modes lowres,full --limit $LIM --gen-length 40 --steps 20 --block-length 40 --overlays 0 --no-progress --out $R/e1c > $L/$V-e1c.log 2>&1
    pack
  fi
  echo "$V done at $(( $(date +%s) - T0 )) s"
}
for P in under inside; do for c in cap nocap; do variant $P $c & done; done
sleep 100; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv; wait
pack; ls -la $OUT
echo "total $(( $(date +%s) - T0 )) s"
