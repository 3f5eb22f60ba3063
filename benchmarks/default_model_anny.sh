#!/usr/bin/env bash
# Retrain the shipped default model on anny data (one GPU; sized for about 8 min on an H200 with the data), then
# score generations of the shipped model ("before") and of the new one ("after") with `humanliff eval gen`.
#
#   benchmarks/default_model_anny.sh [OUT]          (make default-model-anny; OUT defaults to out/default_anny)
#
# Everything goes under OUT: data/ (reused when it is complete, e.g. synthesized on another machine), fit_a/,
# eval_recon/, train/, model/ (the packed model: copy it over humanliff/assets/default to ship it), gen_before/,
# gen_after/ (contact_sheet.png), eval_gen_before/, eval_gen_after/, eval_gen_after_full/ (against all 32
# subjects), timings.tsv (seconds per step) and summary.txt (the figures). The config is configs/default.yaml with
# anny bodies and shorter fit and training (RECIPE_SETS below); RECIPE_CONFIG and RECIPE_EXTRA (more --set
# arguments) resize it, which is how the tests run it at tiny size on the CPU. HUMANLIFF is the command to run.
set -euo pipefail
OUT=${1:-out/default_anny}
read -r -a HL <<< "${HUMANLIFF:-humanliff}"
CONFIG=${RECIPE_CONFIG:-default}
read -r -a EXTRA <<< "${RECIPE_EXTRA:-}"
RECIPE_SETS=(--set synth.bodies=anny --set "data.root=$OUT/data"
             --set fit.iterations_a=2000 --set fit.checkpoint_every=500
             --set train.steps=1500 --set train.lr_anneal_steps=1500 --set train.checkpoint_every=500)
SETS=("${RECIPE_SETS[@]}" "${EXTRA[@]}")
SAMPLE=(--set sample.views=1 --set sample.turntable_frames=1 --set sample.mesh_resolution=32)
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

if [ ! -f "$OUT/data/human_list.txt" ]; then
  step data "${HL[@]}" data synth --config "$CONFIG" "${SETS[@]}" --out "$OUT/data"
fi
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
step eval_before "${HL[@]}" eval gen "$OUT/gen_before" --store "$BEFORE/store" --out "$OUT/eval_gen_before"
step eval_after "${HL[@]}" eval gen "$OUT/gen_after" --store "$OUT/model/store" --out "$OUT/eval_gen_after"
step eval_after_full "${HL[@]}" eval gen "$OUT/gen_after" --store "$OUT/fit_a/store_a" \
  --out "$OUT/eval_gen_after_full"
{
  echo "timings (s):"; cat "$OUT/timings.tsv"
  for name in eval_recon eval_gen_before eval_gen_after eval_gen_after_full; do
    echo "$name:"; cat "$OUT/$name/metrics.json"; echo
  done
} > "$OUT/summary.txt"
echo "wrote $OUT (summary.txt, model/, gen_after/contact_sheet.png)"
