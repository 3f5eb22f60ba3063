"""``benchmarks/default_model_anny.sh`` (make default-model-anny) end to end at tiny size on the CPU.

Its data comes as ``data.tar.gz`` (as when synthesized where anny is installed and carried to the GPU): the script
unpacks it, keeps it (``data synth --reuse``), fits, trains, packs, generates and scores; a dataset of other
settings is refused before any compute. Primitives stand in for anny bodies (the reuse path never needs anny).
"""

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from humanliff.data.synth import synthesize_dataset

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "default_model_anny.sh"
TINY = ("--set synth.bodies=primitives --set synth.subjects=2 --set synth.views=8 --set synth.resolution=32 "
        "--set fit.iterations_a=4 --set fit.checkpoint_every=2 --set train.steps=2 --set train.lr_anneal_steps=2 "
        "--set train.checkpoint_every=2")
STEPS = ["unpack", "data", "preview", "fit_a", "eval_recon", "train", "pack", "gen_before", "gen_after",
         "eval_before", "eval_after", "eval_after_full"]


def _recipe(out: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HUMANLIFF=f"{sys.executable} -m humanliff.cli", RECIPE_CONFIG="tiny", RECIPE_EXTRA=TINY,
               RECIPE_EVAL="--views 1 --size 16", RECIPE_HUMANS="2", RECIPE_BEFORE=str(out / "model"),
               OMP_NUM_THREADS="1")
    return subprocess.run(["bash", str(SCRIPT), str(out)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_recipe_runs_on_carried_data(tmp_path):
    out = tmp_path / "anny"
    synthesize_dataset(tmp_path / "data", subjects=2, views=8, resolution=32, seed=0, workers=1)
    out.mkdir()
    with tarfile.open(out / "data.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "data", arcname="data")
    result = _recipe(out)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "kept" in result.stdout  # the carried data, not a new synthesis
    steps = [line.split("\t")[0] for line in (out / "timings.tsv").read_text().splitlines()]
    assert steps == STEPS
    summary = (out / "summary.txt").read_text()
    assert all(f"{name}:\n{{" in summary for name in ("eval_recon", "eval_gen_before", "eval_gen_after"))
    for path in ("model/ema.pt", "gen_after/contact_sheet.png", "eval_gen_after_full/metrics.json",
                 "data_preview.png"):
        assert (out / path).is_file(), path


def test_recipe_refuses_data_of_other_settings(tmp_path):
    out = tmp_path / "anny"
    synthesize_dataset(out / "data", subjects=2, views=4, resolution=32, seed=0, workers=1)
    result = _recipe(out)
    assert result.returncode == 1
    assert "error: --reuse: " in result.stderr and "views 4 (wanted 8)" in result.stderr
    assert not (out / "fit_a").exists()
