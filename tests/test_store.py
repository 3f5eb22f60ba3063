"""Tri-plane store: round trip, memory-mapped reads, and one-line errors for bad stores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from humanliff.cli import app
from humanliff.config import Config
from humanliff.data.bounds import read_bounds
from humanliff.data.synth import synthesize_dataset
from humanliff.errors import InputFileError
from humanliff.io import atomic_path
from humanliff.store import create_store, open_store
from humanliff.training.import_original import import_original

DATA = Path(__file__).parent / "data"


def _write(path, subjects=("a", "b"), res=4):
    unit = np.array([[-1, -1, -1], [1, 1, 1]], np.float32)
    bounds = np.stack([unit * (i + 1) for i in range(len(subjects))])
    decoder = {"w": torch.arange(3.0)}
    with atomic_path(path) as tmp:
        store = create_store(tmp, list(subjects), bounds, res, 27, decoder, {"kind": "fused"},
                             Config().to_dict())
        planes = np.linspace(-1, 1, store.planes.size, dtype=np.float32).reshape(store.planes.shape)
        store.planes[:] = planes
        store.planes.flush()
    return planes


def test_round_trip(tmp_path):
    planes = _write(tmp_path / "s")
    store = open_store(tmp_path / "s")
    assert store.subjects == ["a", "b"] and store.resolution == 4 and store.channels == 27
    assert isinstance(store.planes, np.memmap) and store.planes.dtype == np.float16
    assert store.planes.shape == (2, 4, 27, 4, 4)
    layer = store.layer("b", 3)
    assert layer.dtype == torch.float32 and layer.shape == (27, 4, 4)
    torch.testing.assert_close(layer, torch.from_numpy(planes[1, 3]), atol=1e-3, rtol=0)
    assert store.layer(1, 3).equal(layer) and store.layer("1", 3).equal(layer)
    torch.testing.assert_close(store.subject_bounds("b"), torch.tensor([[-2.0] * 3, [2.0] * 3]))
    assert store.decoder_state()["w"].tolist() == [0.0, 1.0, 2.0]
    assert store.decoder_config == {"kind": "fused"} and store.config["fit"]["lr_planes"] == 0.1
    assert not list(tmp_path.glob(".s.*"))


def test_bad_lookups(tmp_path):
    _write(tmp_path / "s")
    store = open_store(tmp_path / "s")
    with pytest.raises(InputFileError, match="no subject 'zz'"):
        store.index("zz")
    with pytest.raises(InputFileError, match="subject index 5 out of range"):
        store.index(5)
    with pytest.raises(InputFileError, match="layer 4 out of range"):
        store.layer("a", 4)


def test_not_a_store(tmp_path):
    with pytest.raises(InputFileError, match="not a tri-plane store"):
        open_store(tmp_path)


def test_wrong_planes_shape(tmp_path):
    _write(tmp_path / "s")
    np.save(tmp_path / "s" / "planes.npy", np.zeros((2, 4, 27, 8, 8), np.float16))
    with pytest.raises(InputFileError, match=r"planes\.npy: expected float16 \[2, 4, 27, 4, 4\]"):
        open_store(tmp_path / "s")


def test_bounds_missing_for_a_subject(tmp_path):
    _write(tmp_path / "s")
    path = tmp_path / "s" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["bounds"] = manifest["bounds"][:1]
    path.write_text(json.dumps(manifest))
    with pytest.raises(InputFileError, match=r"manifest\.json: bounds must be \[2, 2, 3\]"):
        open_store(tmp_path / "s")


def test_missing_manifest_key_and_decoder(tmp_path):
    _write(tmp_path / "s")
    (tmp_path / "s" / "decoder.pt").unlink()
    with pytest.raises(InputFileError, match=r"decoder\.pt: missing"):
        open_store(tmp_path / "s")
    path = tmp_path / "s" / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["subjects"]
    path.write_text(json.dumps(manifest))
    with pytest.raises(InputFileError, match="missing keys: subjects"):
        open_store(tmp_path / "s")


def test_bad_decoder_file(tmp_path):
    _write(tmp_path / "s")
    (tmp_path / "s" / "decoder.pt").write_bytes(b"garbage")
    store = open_store(tmp_path / "s")
    with pytest.raises(InputFileError, match=r"decoder\.pt: not a readable torch checkpoint"):
        store.decoder_state()


# --- import of the original's checkpoints -------------------------------------------------------------

def _seed_state():
    return torch.load(DATA / "seed_decoder.pt", weights_only=True)["state_dict"]


def _stage_a(path, subjects=3, res=8, prefix="module."):
    planes = torch.rand(subjects, 4, 3, 9, res, res) * 2 - 1
    state = {prefix + k: v for k, v in _seed_state().items()} | {prefix + "tri_planes": planes}
    torch.save({"global_step": 200000, "network_fn_state_dict": state, "optimizer_state_dict": {}}, path)
    return planes


BOUNDS = {n: np.array([[-0.5, -1, -0.3], [0.5, 1, 0.3]], np.float32) + i for i, n in enumerate("abcd")}


def test_import_stage_a(tmp_path):
    planes = _stage_a(tmp_path / "200000.tar")
    out = import_original(tmp_path / "200000.tar", tmp_path / "store", ["a", "b", "c", "d"], BOUNDS, Config())
    store = open_store(out)
    assert store.subjects == ["a", "b", "c"] and store.planes.shape == (3, 4, 27, 8, 8)
    assert store.decoder_config["kind"] == "seed" and store.config["decoder"]["kind"] == "seed"
    torch.testing.assert_close(store.layer("b", 2), planes[1, 2].reshape(27, 8, 8), atol=1e-3, rtol=0)
    np.testing.assert_array_equal(store.bounds[2], BOUNDS["c"])
    golden = torch.load(DATA / "seed_decoder.pt", weights_only=True)
    rgb, sigma = store.load_decoder()(golden["features"], golden["viewdirs"])
    torch.testing.assert_close(rgb, golden["rgb_raw"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sigma, golden["alpha_raw"], atol=1e-5, rtol=1e-5)


def test_import_stage_b(tmp_path):
    _stage_a(tmp_path / "200000.tar", prefix="")
    files = []
    for name in ("d", "b"):
        planes = torch.rand(1, 4, 3, 9, 8, 8)
        files.append(tmp_path / f"{name}_002000.tar")
        torch.save({"network_fn_state_dict": {"tri_planes": planes}}, files[-1])
    out = import_original(tmp_path / "200000.tar", tmp_path / "store", [], BOUNDS, Config(), stage_b=files)
    store = open_store(out)
    assert store.subjects == ["d", "b"]
    torch.testing.assert_close(store.layer("b", 3), planes[0, 3].reshape(27, 8, 8), atol=1e-3, rtol=0)


def test_import_errors(tmp_path):
    a = tmp_path / "200000.tar"
    _stage_a(a)
    with pytest.raises(InputFileError, match=r"200000\.tar: no bounds for subject\(s\) zz"):
        import_original(a, tmp_path / "s", ["a", "zz", "c"], BOUNDS, Config())
    with pytest.raises(InputFileError, match="holds 3 subjects but only 2 subject names"):
        import_original(a, tmp_path / "s", ["a", "b"], BOUNDS, Config())
    bad = tmp_path / "b_002000.tar"
    torch.save({"network_fn_state_dict": {"tri_planes": torch.zeros(1, 4, 27, 8, 8)}}, bad)
    with pytest.raises(InputFileError, match=r"b_002000\.tar: tri_planes must be \[1, 4, 3, 9, R, R\]"):
        import_original(a, tmp_path / "s", [], BOUNDS, Config(), stage_b=[bad])
    torch.save({"network_fn_state_dict": {"tri_planes": torch.zeros(1, 4, 3, 9, 8, 8)}}, tmp_path / "x.tar")
    with pytest.raises(InputFileError, match=r"x\.tar: stage-B file name must be"):
        import_original(a, tmp_path / "s", [], BOUNDS, Config(), stage_b=[tmp_path / "x.tar"])
    state = _seed_state()
    del state["rgb_linear.bias"]
    torch.save({"network_fn_state_dict": state | {"tri_planes": torch.zeros(1, 4, 3, 9, 8, 8)}}, a)
    with pytest.raises(InputFileError, match=r"200000\.tar: decoder keys missing: rgb_linear\.bias"):
        import_original(a, tmp_path / "s", ["a"], BOUNDS, Config())
    torch.save({"something": 1}, a)
    with pytest.raises(InputFileError, match="no 'network_fn_state_dict'"):
        import_original(a, tmp_path / "s", ["a"], BOUNDS, Config())
    a.write_bytes(b"not a tar")
    with pytest.raises(InputFileError, match="not a readable torch checkpoint"):
        import_original(a, tmp_path / "s", ["a"], BOUNDS, Config())
    assert not (tmp_path / "s").exists() and not list(tmp_path.glob(".s.*"))


def test_store_import_cli(tmp_path):
    root = synthesize_dataset(tmp_path / "data", subjects=2, views=2, resolution=16, seed=0, workers=1)
    planes = _stage_a(tmp_path / "200000.tar", subjects=2)
    runner = CliRunner()
    args = ["store", "import", "--set", f"data.root={root}", str(tmp_path / "200000.tar"), "--out",
            str(tmp_path / "store")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    store = open_store(tmp_path / "store")
    assert store.subjects == ["seq_000000", "seq_000001"]
    np.testing.assert_array_equal(store.bounds[1], read_bounds(root / "seq_000001" / "bounds.json"))
    torch.testing.assert_close(store.layer(0, 1), planes[0, 1].reshape(27, 8, 8), atol=1e-3, rtol=0)
    (root / "seq_000001" / "bounds.json").unlink()
    result = runner.invoke(app, [*args, "--force"])
    assert result.exit_code == 1
    assert "seq_000001/bounds.json: missing" in result.output
