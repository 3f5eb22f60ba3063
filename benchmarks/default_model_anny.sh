#!/usr/bin/env bash
# Retrain the shipped default model on anny data (one GPU; 466 s on an H200 with the data carried), then
# score generations of the shipped model ("before") and of the new one ("after") with `humanliff eval gen`.
#
#   benchmarks/default_model_anny.sh [OUT]          (make default-model-anny; OUT defaults to out/default_anny)
#
# Everything goes under OUT: data/ (kept when it is the complete dataset of these settings: `data synth --reuse`
# checks its synth.json and reads every file; OUT/data.tar.gz, a tar of data/ made where anny is installed, is
# unpacked first when data/ is absent), fit_a/, eval_recon/, train/, model/ (the packed model: copy it over
# humanliff/assets/default to ship it), gen_before/, gen_after/ (contact_sheet.png), eval_gen_before/,
# eval_gen_after/, eval_gen_after_full/ (against all 32 subjects), timings.tsv (seconds per step) and summary.txt
# (the figures). The config is configs/default.yaml (32 subjects x 32 views x 128 px, tri-planes R = 64) with anny
# bodies, a shorter fit (2000 iterations), and a longer training (7000 steps) without torch.compile
# (RECIPE_SETS below); RECIPE_CONFIG, RECIPE_EXTRA (more --set arguments), RECIPE_EVAL (more `eval gen` options),
# RECIPE_HUMANS and RECIPE_BEFORE resize it, which is how tests/test_default_model_anny.py runs it at tiny size on
# the CPU. HUMANLIFF is the command to run (default `humanliff`).
set -euo pipefail
OUT=${1:-out/default_anny}
read -r -a HL <<< "${HUMANLIFF:-humanliff}"
CONFIG=${RECIPE_CONFIG:-default}
read -r -a EXTRA <<< "${RECIPE_EXTRA:-}"
# Training compiles nothing: eager it ran 7000 steps in 273 s on the H200 (26.8 steps/s; 1200 steps gave noise),
# and the ~190 s compile of the UNet would cost more than it saves.
RECIPE_SETS=(--set synth.bodies=anny --set synth.subjects=32 --set synth.views=32 --set synth.resolution=128
             --set "data.root=$OUT/data" --set fit.iterations_a=2000 --set fit.checkpoint_every=1000
             --set train.steps=7000 --set train.lr_anneal_steps=7000 --set train.checkpoint_every=3500
             --set train.compile=false)
SETS=("${RECIPE_SETS[@]}" "${EXTRA[@]}")
SAMPLE=(--set sample.views=1 --set sample.turntable_frames=1 --set sample.mesh_resolution=32 --set sample.compile=false)
read -r -a EVAL <<< "${RECIPE_EVAL:-}"
HUMANS=${RECIPE_HUMANS:-8}
BEFORE=${RECIPE_BEFORE:-humanliff/assets/default}  # the shipped model (run from the repository root)
mkdir -p "$OUT"
: > "$OUT/timings.tsv"

step() {  # step NAME COMMAND...: run it, append "NAME<TAB>seconds" to timings.tsv
  local name=$1 start=$SECONDS
  shift
  echo "== $name: $*"
  "$@"
  printf '%s\t%d\n' "$name" $((SECONDS - start)) | tee -a "$OUT/timings.tsv"
}

if [ ! -e "$OUT/data" ] && [ -f "$OUT/data.tar.gz" ]; then
  step unpack tar -xzf "$OUT/data.tar.gz" -C "$OUT" data
fi
step data "${HL[@]}" data synth --config "$CONFIG" "${SETS[@]}" --reuse --out "$OUT/data"
step preview "${HL[@]}" data preview "$OUT/data" --out "$OUT/data_preview.png"
step fit_a "${HL[@]}" fit --stage a --config "$CONFIG" "${SETS[@]}" --out "$OUT/fit_a"
step eval_recon "${HL[@]}" eval recon --config "$CONFIG" "${SETS[@]}" --store "$OUT/fit_a/store_a" \
  --out "$OUT/eval_recon" --max-views 2
step train "${HL[@]}" train --config "$CONFIG" "${SETS[@]}" --store "$OUT/fit_a/store_a" --out "$OUT/train"
step pack "${HL[@]}" model pack --unet "$OUT/train" --store "$OUT/fit_a/store_a" --out "$OUT/model" --force
# The same 8 seeds from the shipped model (trained on the primitives) and the new one, each scored against its
# packed store (4 subjects, the same kind of reference); the new one also against the whole anny store.
for side in before after; do
  model=$BEFORE
  [ "$side" = after ] && model=$OUT/model
  step "gen_$side" "${HL[@]}" generate --config "$CONFIG" "${SETS[@]}" "${SAMPLE[@]}" --unet "$model/ema.pt" \
    --store "$model/store" --batch "$HUMANS" --seed 0 --out "$OUT/gen_$side" --force
done
EVAL_CFG=(--config "$CONFIG" "${SETS[@]}" "${EVAL[@]}")
step eval_before "${HL[@]}" eval gen "$OUT/gen_before" "${EVAL_CFG[@]}" --store "$BEFORE/store" \
  --out "$OUT/eval_gen_before"
step eval_after "${HL[@]}" eval gen "$OUT/gen_after" "${EVAL_CFG[@]}" --store "$OUT/model/store" \
  --out "$OUT/eval_gen_after"
step eval_after_full "${HL[@]}" eval gen "$OUT/gen_after" "${EVAL_CFG[@]}" --store "$OUT/fit_a/store_a" \
  --out "$OUT/eval_gen_after_full"
{
  echo "timings (s):"; cat "$OUT/timings.tsv"
  for name in eval_recon eval_gen_before eval_gen_after eval_gen_after_full; do
    echo "$name:"; cat "$OUT/$name/metrics.json"; echo
  done
} > "$OUT/summary.txt"
echo "wrote $OUT (summary.txt, model/, gen_after/contact_sheet.png)"
