# Issue 19: progressive (and with METHODS=progressive,consistency also consistency) distillation of the default
# model, scored by eval gen; the best student comes back as student.tar.part-*. DARGS: more benchmark flags.
source benchmarks/gpu_calls/setup.sh
R=$OUT
OUT= timeout ${DT:-540} python3 -m benchmarks.distill --out /tmp/d --methods ${METHODS:-progressive} --steps 4 \
  --train-steps ${TSTEPS:-2700} --budget-s ${DBUDGET:-330} --teacher-samples 256 --humans 64 ${DARGS:-} > $R/distill_log.txt 2>&1
echo "rc=$? after $((SECONDS-T0)) s" >> $OUT/distill_log.txt
cp /tmp/d/*.md /tmp/d/*.json $OUT/ 2>/dev/null
[ -d /tmp/d/best_student ] && tar -cf - -C /tmp/d best_student | split -b 15M - $OUT/student.tar.part-
tail -15 $OUT/distill_log.txt
source benchmarks/gpu_calls/pack.sh
