# Sourced first by every script here. Runs from the repository root on a bare GPU machine without network, with
# the missing pure-Python wheels (trimesh) in .whl/ and results going to $OUT. Installs the wheels, makes the
# tree importable as the `humanliff` package (links runtime/ and export/ into it, as pyproject's package-dir
# does; `python -m` puts the cwd first on sys.path, so an installed copy would not win), and records the
# machine in $OUT/env.txt. HUMANLIFF_COMMIT (default: gpu/commit, else git's HEAD) names the tree in reports.
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
[ -e humanliff/runtime ] || ln -s ../runtime humanliff/runtime
[ -e humanliff/export ] || ln -s ../export humanliff/export
export PYTHONPATH=$PWD:/tmp/site
export HUMANLIFF="python3 -m humanliff.cli"
export HUMANLIFF_COMMIT=${HUMANLIFF_COMMIT:-$(cat gpu/commit 2>/dev/null || git rev-parse --short HEAD)}
mkdir -p "$OUT"
{ echo "commit $HUMANLIFF_COMMIT"; date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader;
  python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"; echo "CXX=${CXX:-}"
} > "$OUT/env.txt" 2>&1
T0=$SECONDS
