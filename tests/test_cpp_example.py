"""examples/cpp: the C++ program built with CMake against the installed torch, run on tiny artifacts."""

import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from tiny_models import make_tiny_models

from humanliff.export.artifacts import export_artifacts
from humanliff.runtime.engines import load_engine

SOURCE = Path(__file__).resolve().parents[1] / "examples" / "cpp"
pytestmark = pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("c++") is None,
                                reason="needs cmake and a C++ compiler")


def _inputs(resolution: int) -> dict[str, torch.Tensor]:
    """The fixed inputs of examples/cpp/humanliff_unet.cpp."""
    flat = torch.arange(27 * resolution * resolution, dtype=torch.float32) * 0.01
    shape = (1, 27, resolution, resolution)
    return {"x": torch.sin(flat).reshape(shape), "timesteps": torch.tensor([500]),
            "x_cond": torch.cos(flat).reshape(shape), "y": torch.tensor([1])}


def test_cpp_example_matches_python(tmp_path):
    ema, store, _ = make_tiny_models(tmp_path)
    folder = tmp_path / "artifacts"
    manifest = export_artifacts(ema, store, folder, "torchscript,aoti,ep", device="cpu", unet_layout="whole",
                                progress=False)
    assert manifest["networks"]["unet"]["artifacts"]["aoti"]["status"] == "ok"
    build = tmp_path / "build"
    prefix = torch.utils.cmake_prefix_path
    for cmd in (["cmake", "-S", str(SOURCE), "-B", str(build), f"-DCMAKE_PREFIX_PATH={prefix}",
                 "-DCMAKE_BUILD_TYPE=Release"], ["cmake", "--build", str(build), "-j", "2"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    proc = subprocess.run([str(build / "humanliff_unet"), str(folder), "16"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sums = dict(line.split() for line in proc.stdout.strip().splitlines())
    assert set(sums) == {"aoti", "torchscript"}
    expected = float(load_engine(folder, "unet", prefer=("ep",))(**_inputs(16))["eps"].sum())
    for name, value in sums.items():
        assert float(value) == pytest.approx(expected, rel=1e-3, abs=1e-3), name
    missing = subprocess.run([str(build / "humanliff_unet"), str(tmp_path), "16"], capture_output=True, text=True)
    assert missing.returncode == 1 and "no unet.pt2 or unet.ts" in missing.stderr
