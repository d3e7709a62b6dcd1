#!/usr/bin/env bash
# Train the embedded model (assets/pixel-reasoner-tiny) end to end on one machine:
# synthetic TinyZoom data, optionally a vision pre-training stage, then SFT for a wall-clock budget.
#
#   bash scripts/train_embedded.sh [DEST]      # DEST defaults to assets/pixel-reasoner-tiny
#
# Environment: BUDGET (seconds for the whole script, default 520), TRAIN_ITEMS (default 12000),
# WORKERS (data processes, default: cores - 1), DATA (default data/tinyzoom), RUN (default runs/sft_tiny),
# SEED (data seed, default 0), CLOSEUPS (training-only close-up reading records, default 0),
# FROM (continue from this checkpoint instead of a fresh tiny model),
# VISION_SECONDS (default 0; > 0 first pre-trains a fresh vision tower for that long with
# `train vision`, keeping the language model of FROM or of the shipped model, then teaches it to hand
# the LM words for WORDS_SECONDS (default 720; configs/vision_words.json), then runs SFT from it
# with the tower frozen).
# On one H100 with 16 cores the default budget gives ~6 minutes of SFT. The TinyZoom test split is
# written by `python -m train synth --test 330` separately (evaluation needs its mp4s).
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
DEST=${1:-assets/pixel-reasoner-tiny}
BUDGET=${BUDGET:-520}
TRAIN_ITEMS=${TRAIN_ITEMS:-12000}
WORKERS=${WORKERS:-$(( $(nproc) > 1 ? $(nproc) - 1 : 1 ))}
DATA=${DATA:-data/tinyzoom}
RUN=${RUN:-runs/sft_tiny}
PY=${PYTHON:-python}
SEED=${SEED:-0}

$PY -m train synth --out "$DATA" --train "$TRAIN_ITEMS" --validation 0 --test 0 --seed "$SEED" --workers "$WORKERS" \
  --closeups "${CLOSEUPS:-0}"
echo "data ready after $(( $(date +%s) - T0 )) s"
# what is left of the budget, less ~40 s for start-up and saving, goes to training
TRAIN_SECONDS=$(( BUDGET - ($(date +%s) - T0) - 40 ))
if [ "$TRAIN_SECONDS" -lt 30 ]; then TRAIN_SECONDS=30; fi
EXTRA=()
VISION_SECONDS=${VISION_SECONDS:-0}
if [ "$VISION_SECONDS" -gt 0 ]; then
  $PY -m train vision --config configs/vision_tiny.json model="${FROM:-assets/pixel-reasoner-tiny}" \
    out="$RUN-vision" max_seconds="$VISION_SECONDS" num_workers="$(( WORKERS < 12 ? WORKERS : 12 ))"
  echo "vision tower ready after $(( $(date +%s) - T0 )) s"
  FROM="$RUN-vision/final"
  WORDS_SECONDS=${WORDS_SECONDS:-720}
  if [ "$WORDS_SECONDS" -gt 0 ]; then
    $PY -m train vision --config configs/vision_words.json model="$FROM" out="$RUN-words" \
      max_seconds="$WORDS_SECONDS" num_workers="$(( WORKERS < 12 ? WORKERS : 12 ))"
    echo "tower hands the LM words after $(( $(date +%s) - T0 )) s"
    FROM="$RUN-words/final"
  fi
  EXTRA+=(freeze_vision=true)
  TRAIN_SECONDS=$(( TRAIN_SECONDS - VISION_SECONDS - WORDS_SECONDS - 60 ))
  if [ "$TRAIN_SECONDS" -lt 30 ]; then TRAIN_SECONDS=30; fi
fi
if [ -n "${FROM:-}" ]; then EXTRA+=(model="$FROM" warmup_ratio=0.01); fi
if ! $PY -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  EXTRA+=(bf16=false num_workers=1 batch_size=8)   # CPU: same recipe, smaller batches
fi
$PY -m train sft --config configs/sft_tiny.json data="$DATA" out="$RUN" final_dir="$DEST" \
  max_seconds="$TRAIN_SECONDS" num_workers="$(( WORKERS < 12 ? WORKERS : 12 ))" "${EXTRA[@]}"
echo "done after $(( $(date +%s) - T0 )) s"
