# Issue 21: stage A on one GPU. The GPU tests of the stage-A and diffusion steps (CUDA-graphed against eager; fused kernel against
# the torch path), then the fit section (stage-B and stage-A iterations against the original's, in the same run),
# with the eager fused step profiled (HUMANLIFF_BENCH_PROFILE=1: kernel table in log_fit.txt).
source benchmarks/gpu_calls/setup.sh
timeout ${PT:-200} python3 -m pytest -q -x -p no:cacheprovider tests/test_fit_cuda_graph.py tests/test_fused_stage_a.py tests/test_train_cuda_graph.py \
  > $OUT/pytest_fit.txt 2>&1
echo "rc=$? after $((SECONDS-T0)) s" >> $OUT/pytest_fit.txt; tail -30 $OUT/pytest_fit.txt
HUMANLIFF_BENCH_PROFILE=1 timeout ${FT:-360} python3 -m benchmarks.run --sections ${SECTIONS:-fit} --out $OUT/bench \
  > $OUT/log_fit.txt 2>&1
echo "rc=$? after $((SECONDS-T0)) s" >> $OUT/log_fit.txt
grep -E "^\[|rc=" $OUT/log_fit.txt | tail -30; cp $OUT/bench/* $OUT/ 2>/dev/null; rm -rf $OUT/bench
source benchmarks/gpu_calls/pack.sh
