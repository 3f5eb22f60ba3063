# Issue 21: where a training step's GPU time goes (benchmarks.train_profile: convolutions alone, then one step
# profiled eager and compiled block by block) at microbatch MICRO. Packs nothing: chain a call_*.sh after it.
source benchmarks/gpu_calls/setup.sh
timeout ${PT:-330} python3 -m benchmarks.train_profile --out /tmp/profile --microbatch ${MICRO:-16} ${PARGS:---compiled} \
  > $OUT/log_profile.txt 2>&1
echo "rc=$? after $((SECONDS-T0)) s" >> $OUT/log_profile.txt
grep -E "^\[|rc=|rror" $OUT/log_profile.txt | tail -40; cp /tmp/profile/* $OUT/ 2>/dev/null
