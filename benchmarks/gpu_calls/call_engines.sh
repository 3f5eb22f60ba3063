# Issue 15: export aoti (frozen) + torchscript at the original size, engine calls vs torch, run start to exit.
source benchmarks/gpu_calls/setup.sh
HUMANLIFF_BENCH_RUNTIME_S=${RT_BUDGET:-430} timeout 540 python3 -m benchmarks.run --sections runtime \
  --formats aoti,torchscript --aoti-tuning ${TUNING:-frozen} --out $OUT/bench > $OUT/log.txt 2>&1
echo "rc=$? after $((SECONDS-T0)) s" >> $OUT/log.txt
tail -40 $OUT/log.txt; cp $OUT/bench/* $OUT/ 2>/dev/null; rm -rf $OUT/bench
source benchmarks/gpu_calls/pack.sh
