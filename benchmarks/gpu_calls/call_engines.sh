# Issue 15: the runtime section at the original size (AOTInductor frozen + TorchScript), in two back-to-back calls
# on one warm machine: STAGE=export builds the engines into /tmp/hl_arts (about 400 s) and records where the run
# command's imports go; STAGE=measure (the default) reuses them for the engine calls against the torch path,
# start-up, `humanliff run` and the warm humans. Without a warm export, measure exports first (over 540 s).
# BENCH_ARGS: more flags for the benchmark (e.g. --static-batch: the UNet engines for batch 1 only, shapes fixed).
source benchmarks/gpu_calls/setup.sh
ARTS=${ARTS:-/tmp/hl_arts}
if [ "${STAGE:-measure}" = export ]; then
  python3 -X importtime -c "import humanliff.cli, humanliff.pipeline, humanliff.run_pipeline, humanliff.generation_result" \
    2> $OUT/importtime_run.txt
  ONLY=--export-only
fi
HUMANLIFF_BENCH_RUNTIME_S=${RT_BUDGET:-540} timeout ${RT_TIMEOUT:-590} python3 -m benchmarks.run --sections runtime \
  --formats aoti,torchscript --aoti-tuning ${TUNING:-frozen} --artifacts $ARTS ${ONLY:-} ${BENCH_ARGS:-} --out $OUT/bench \
  > $OUT/log_${STAGE:-measure}.txt 2>&1
echo "rc=$? after $((SECONDS-T0)) s" >> $OUT/log_${STAGE:-measure}.txt
tail -40 $OUT/log_${STAGE:-measure}.txt; cp $OUT/bench/* $OUT/ 2>/dev/null; rm -rf $OUT/bench
source benchmarks/gpu_calls/pack.sh
