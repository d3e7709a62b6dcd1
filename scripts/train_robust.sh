#!/usr/bin/env bash
# The robustness retrain in one command: varied data with the search trace kinds, SFT of the whole model from
# the shipped weights, then the TinyZoom test split and the shift-suite report of the result (docs/robustness.md).
#
#   bash scripts/train_robust.sh [DEST]      # DEST defaults to runs/robust/final
#
# Environment: ITEMS (traces, default 16000; 3/4 varied, 1/4 the original generator's), CLOSEUPS (default 4000),
# SFT_SECONDS (training budget, default 480 on a GPU, 6000 on a CPU), PER_SHIFT (shift-suite items per shift,
# default 60), SCALE (multiplies every size and budget, default 1; 0.002 is a CPU smoke run), FROM (default
# assets/pixel-reasoner-tiny), WORKERS (data processes, default: the cores), PYTHON; RUNS, DATA and SHIFTS move
# the run folder (runs/robust), the data (data/robust) and the shift suite (data/shifts).
#
# Cut off at any point, the same command goes on where it stopped: finished data is kept (a build resumes from
# its finished parts), SFT resumes from its last checkpoint (one every 10 minutes), evaluations skip done items.
# The report ends with the bars (met / NOT met) and the start model beside the result, shift by shift.
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
PY=${PYTHON:-python}
FROM=${FROM:-assets/pixel-reasoner-tiny}
WORKERS=${WORKERS:-$(nproc)}
NW=$(( WORKERS < 7 ? WORKERS : 7 ))
R=${RUNS:-runs/robust}
D=${DATA:-data/robust}
S=${SHIFTS:-data/shifts}
DEST=${1:-$R/final}
scaled() { awk -v s="$1" -v k="${SCALE:-1}" -v m="$2" 'BEGIN { v = int(s * k); print (v < m ? m : v) }'; }
stage() { echo "== $1 after $(( $(date +%s) - T0 )) s"; }
if $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  DEV=(bf16=true); EVAL_DEV=(--device cuda); BUDGET=480; else DEV=(batch_size=8 num_workers=1); EVAL_DEV=(); BUDGET=6000; fi
N_ITEMS=$(scaled "${ITEMS:-16000}" 20)
N_CLOSE=$(scaled "${CLOSEUPS:-4000}" 4)
N_SHIFT=$(scaled "${PER_SHIFT:-60}" 2)
N_TEST=$(scaled 330 10)

stage "data: $N_ITEMS traces (seed 21, 3/4 varied) + $N_CLOSE close-ups"
$PY -m train synth --out $D --train "$N_ITEMS" --validation 0 --test 0 --seed 21 --variety train \
  --variety-share 0.75 --closeups "$N_CLOSE" --workers "$WORKERS"
stage "SFT of the whole model from $FROM"
$PY -m train sft --config configs/sft_tiny_robust.json model="$FROM" data=$D out=$R/sft final_dir="$DEST" \
  num_workers=$NW "${DEV[@]}" max_seconds="$(scaled "${SFT_SECONDS:-$BUDGET}" 10)" \
  save_minutes="$(awk -v k="${SCALE:-1}" 'BEGIN { print 10 * (k < 1 ? k : 1) }')"
stage "TinyZoom test split (seed 0) and the shift suite ($N_SHIFT per shift)"
$PY -m train synth --out $D-test --train 0 --validation 0 --test "$N_TEST" --seed 0 --workers "$WORKERS"
$PY -m train synth --shift-suite $S --per-shift "$N_SHIFT" --workers "$WORKERS"
$PY -m core eval --bench tinyzoom --data $D-test --model "$DEST" --batch 16 --no-db --quiet \
  --out $R/eval/tinyzoom "${EVAL_DEV[@]}"
$PY -m core eval --bench tinyzoom --data $D-test --model "$FROM" --batch 16 --no-db --quiet \
  --out $R/eval/tinyzoom-before "${EVAL_DEV[@]}"
$PY -m core eval --bench tinyzoom --data $D-test --model "$DEST" --batch 16 --no-db --quiet --no-tools \
  --categories zoom_needed --out $R/eval/tinyzoom-notools "${EVAL_DEV[@]}"
$PY -m train shift-report --suite $S --model "$FROM" --out $R/shifts-before --batch 16 \
  --title "$FROM on the shift suite" "${EVAL_DEV[@]}" > /dev/null
$PY -m train shift-report --suite $S --model "$DEST" --out $R/shifts --batch 16 --before $R/shifts-before \
  --title "$DEST on the shift suite" "${EVAL_DEV[@]}"
stage "done: $DEST (report: $R/shifts/report.md)"
