# Issue 21: diffusion training samples/s at microbatch 8, 16, 2 and 32 (train.compile_scope=blocks, CUDA-graphed step)
# against the original step in the same run (MICROS: other microbatches, in order, e.g. 16,32,2); rows that
# would end past TBUDGET seconds are skipped.
source benchmarks/gpu_calls/setup.sh
timeout ${TT:-330} python3 -m benchmarks.run --sections train --train-rows microbatch --train-budget-s ${TBUDGET:-270} \
  --train-microbatches ${MICROS:-8,16,2,32} \
  --out $OUT/bench > $OUT/log_train.txt 2>&1
echo "rc=$? after $((SECONDS-T0)) s" >> $OUT/log_train.txt
grep -E "^\[|rc=" $OUT/log_train.txt | tail -20; cp $OUT/bench/* $OUT/ 2>/dev/null; rm -rf $OUT/bench
source benchmarks/gpu_calls/pack.sh
