# Issue 16: the default row and the head band on the shipped (anny) model, 64 humans; QP: precisions (bf16).
source benchmarks/gpu_calls/setup.sh
timeout ${QT:-150} python3 -m benchmarks.quality --humans 64 --precisions ${QP:-bf16} \
  --rows ${QROWS:-dpmpp_sde_20,dpmpp_sde_20+head,dpmpp_sde_20+floaters,dpmpp_sde_20+head+floaters} \
  --out /tmp/quality > $OUT/quality_log.txt 2>&1; echo "rc=$? after $((SECONDS-T0)) s" >> $OUT/quality_log.txt
cp /tmp/quality/quality.md /tmp/quality/quality.json $OUT/ 2>/dev/null
tail -8 $OUT/quality_log.txt; cat $OUT/quality.md
source benchmarks/gpu_calls/pack.sh
