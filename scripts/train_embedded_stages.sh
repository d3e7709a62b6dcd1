#!/usr/bin/env bash
# Reproduce the shipped assets/pixel-reasoner-tiny in one command: the earlier weights (SFT from scratch,
# then a continuation), then stages 1 to 6 of its model card, each from the previous one's output.
#
#   bash scripts/train_embedded_stages.sh [DEST]      # DEST defaults to runs/embedded/final
#
# Everything goes under runs/embedded/ and data/embedded/. The time budgets are the card's: 3.3 h of
# training in all (the earlier weights and stage 6 were trained on one GPU, stages 1 to 5 on 2 CPU cores).
# Environment: SCALE (multiplies every budget, default 1; 0.01 gives a smoke run of a few minutes),
# BASE_ITEMS (default 12000), ITEMS (default 4000), CLOSEUPS (default 3000), WORKERS (data processes,
# default: cores - 1), PYTHON.
# Stages 3 to 5 keep the card's CPU settings (batch 8, float32) wherever they run, so that the recipe is
# the same; stage 6 uses bf16 only on a GPU.
# The robustness retrain continues from the result: FROM=DEST bash scripts/train_robust.sh (docs/robustness.md).
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
DEST=${1:-runs/embedded/final}
PY=${PYTHON:-python}
WORKERS=${WORKERS:-$(( $(nproc) > 1 ? $(nproc) - 1 : 1 ))}
NW=$(( WORKERS < 7 ? WORKERS : 7 ))
R=runs/embedded
D=data/embedded
secs() { awk -v s="$1" -v k="${SCALE:-1}" 'BEGIN { v = int(s * k); print (v < 10 ? 10 : v) }'; }
stage() { echo "== $1 after $(( $(date +%s) - T0 )) s"; }
if $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then GPU=(bf16=true); else GPU=(bf16=false); fi
SFT_CPU=(bf16=false batch_size=8 num_workers=1)

stage "earlier weights: SFT from scratch, then a continuation"
BUDGET=$(secs 520) TRAIN_ITEMS=${BASE_ITEMS:-12000} DATA=$D/base RUN=$R/base WORKERS=$WORKERS PYTHON=$PY \
  bash scripts/train_embedded.sh $R/base/final
SEED=1 BUDGET=$(secs 262) TRAIN_ITEMS=${ITEMS:-4000} DATA=$D/base_seed1 RUN=$R/base2 FROM=$R/base/final \
  WORKERS=$WORKERS PYTHON=$PY bash scripts/train_embedded.sh $R/base2/final

stage "1. a fresh tower reads glyphs"
$PY -m train vision --config configs/vision_tiny.json model=$R/base2/final out=$R/vision max_seconds="$(secs 2100)"
stage "2. its tokens become the LM's words"
$PY -m train vision --config configs/vision_words.json model=$R/vision/final out=$R/words max_seconds="$(secs 720)"

stage "data: ${ITEMS:-4000} traces (seed 3) + ${CLOSEUPS:-3000} close-ups"
$PY -m train synth --out $D/mix --train "${ITEMS:-4000}" --validation 0 --test 0 --seed 3 \
  --closeups "${CLOSEUPS:-3000}" --workers "$WORKERS"
sft() {  # name, start, overrides...: one SFT stage into $R/<name>/final
  local name=$1 start=$2; shift 2
  $PY -m train sft --config configs/sft_tiny.json model="$start" data=$D/mix out=$R/$name final_dir=$R/$name/final \
    eval_split=null "$@"
}
stage "3. SFT on the traces alone, tower frozen"
sft sft3 $R/words/final freeze_vision=true limit="${ITEMS:-4000}" "${SFT_CPU[@]}" max_seconds="$(secs 2400)"
stage "4. SFT with the close-ups"
sft sft4 $R/sft3/final freeze_vision=true "${SFT_CPU[@]}" max_seconds="$(secs 1800)" learning_rate=5e-4
for part in 5a 5b; do
  stage "$part. grounded tokens x 5"
  from=$R/sft4/final; seed=0
  if [ $part = 5b ]; then from=$R/sft5a/final; seed=1; fi
  sft sft$part $from freeze_vision=true 'repeat={"zoom_optional": 3, "closeup": 0.3333}' grounded_weight=5 \
    "${SFT_CPU[@]}" max_seconds="$(secs 1800)" learning_rate=5e-4 seed=$seed
done
stage "6. the whole model, tower included (6b resumes 6a's checkpoint)"
for budget in 340 200; do
  $PY -m train sft --config configs/sft_tiny_grounded.json model=$R/sft5b/final data=$D/mix out=$R/sft6 \
    final_dir="$DEST" num_workers=$NW "${GPU[@]}" max_seconds="$(secs $budget)"
done
stage "done: $DEST"
