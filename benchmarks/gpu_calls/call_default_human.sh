# Issue 19's speed targets: a warm 4-layer human of the default model and of its shipped distilled student
# through the engines (benchmarks.default_human; FORMATS default aoti, BATCHES default 1,16, one 512 px view).
source benchmarks/gpu_calls/setup.sh
timeout ${DH:-540} python3 -m benchmarks.default_human --out /tmp/dh --formats ${FORMATS:-aoti} \
  --batches ${BATCHES:-1,16} > $OUT/log_default_human.txt 2>&1
echo "rc=$? after $((SECONDS-T0)) s" >> $OUT/log_default_human.txt
grep -E "^\[|rc=|rror" $OUT/log_default_human.txt | tail -20
source benchmarks/gpu_calls/pack.sh
