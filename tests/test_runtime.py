"""``humanliff run``: manifest checks, engines and their fallback, the lean pipeline against ``generate``."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from tiny_models import FAST, make_tiny_models

from humanliff.cli import app
from humanliff.config import load_config
from humanliff.errors import HumanLiffError, InputFileError
from humanliff.export.artifacts import export_artifacts
from humanliff.generate import generate
from humanliff.pipeline import Pipeline
from humanliff.run_pipeline import engine_field
from humanliff.runtime import manifest as manifest_module
from humanliff.runtime.engines import graphed, load_engine
from humanliff.runtime.formats import FORMATS, PREFERENCE, EngineUnavailable
from humanliff.runtime.formats.aoti import AOTIEngine
from humanliff.runtime.formats.base import cache_dir, device_key
from humanliff.runtime.formats.onnx import OnnxEngine
from humanliff.runtime.formats.tensorrt import TensorRTEngine
from humanliff.runtime.manifest import MANIFEST_NAME, NetworkSpec, network_spec, read_manifest, sha256_file
from humanliff.runtime.unet_engine import load_unet
from humanliff.runtime.verified_files import RECORD_NAME, remember_written

FORBIDDEN = ("humanliff.training", "humanliff.models", "humanliff.data", "humanliff.generate")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """The tiny models and their ep + onnx + torchscript artifacts (fp32, batch 2), the UNet whole and in parts."""
    root = tmp_path_factory.mktemp("runtime")
    ema, store, _ = make_tiny_models(root)
    export_artifacts(ema, store, root / "artifacts", "ep,onnx,torchscript", batch=2, device="cpu", overrides=FAST,
                     unet_layout="both", progress=False)
    return ema, store, root / "artifacts"


def _copy(artifacts, tmp_path):
    return shutil.copytree(artifacts, tmp_path / "copy")


def _edit_manifest(folder, edit):
    path = folder / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def test_unknown_manifest_version_is_one_line_error(artifacts, tmp_path):
    folder = _copy(artifacts[2], tmp_path)
    _edit_manifest(folder, lambda m: m.update(version=99))
    with pytest.raises(InputFileError, match=r"manifest.json: unknown manifest version 99 \(this runtime"):
        read_manifest(folder)
    (folder / MANIFEST_NAME).write_text("{oops")
    with pytest.raises(InputFileError, match="manifest.json: not valid JSON"):
        read_manifest(folder)
    with pytest.raises(InputFileError, match="no artifacts manifest here"):
        read_manifest(tmp_path)


def test_altered_or_missing_artifact_is_refused(artifacts, tmp_path):
    folder = _copy(artifacts[2], tmp_path)
    with open(folder / "unet.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(InputFileError, match=r"unet.onnx: sha256 differs from manifest.json"):
        load_engine(folder, "unet", prefer=("onnx",))
    assert load_engine(folder, "unet", prefer=("onnx", "ep")).format == "ep"  # the next format is tried
    (folder / "unet.ts").write_bytes(b"not torchscript")
    _edit_manifest(folder, lambda m: m["networks"]["unet"]["artifacts"]["torchscript"]["files"].update(
        {"unet.ts": sha256_file(folder / "unet.ts")}))
    with pytest.raises(InputFileError, match=r"torchscript: .*unet.ts: not a loadable TorchScript module"):
        load_engine(folder, "unet", prefer=("torchscript",))
    (folder / "decoder.ep.pt2").unlink()
    with pytest.raises(InputFileError, match=r"decoder.ep.pt2: artifact listed in manifest.json is missing"):
        load_engine(folder, "decoder", prefer=("ep",))


def test_a_verified_file_is_hashed_again_only_when_it_changed(artifacts, tmp_path, monkeypatch):
    """The second load of unchanged files skips their sha256; a file rewritten with its size and modification
    time kept (its status-change time moves) is hashed again and refused."""
    monkeypatch.setenv("HUMANLIFF_CACHE", str(tmp_path / "cache"))
    folder = _copy(artifacts[2], tmp_path)
    load_engine(folder, "unet", prefer=("onnx",))
    hashed, real = [], manifest_module.sha256_file
    monkeypatch.setattr(manifest_module, "sha256_file", lambda p: hashed.append(Path(p).name) or real(p))
    load_engine(folder, "unet", prefer=("onnx",))
    assert hashed == [] and (tmp_path / "cache" / RECORD_NAME).is_file()
    path = folder / "unet.onnx"
    st, data = path.stat(), bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    with pytest.raises(InputFileError, match=r"unet.onnx: sha256 differs from manifest.json"):
        load_engine(folder, "unet", prefer=("onnx",))
    assert "unet.onnx" in hashed
    (tmp_path / "cache" / RECORD_NAME).write_text("{oops")  # a corrupt record: the files are hashed again
    hashed.clear()
    assert load_engine(folder, "decoder", prefer=("onnx",)).format == "onnx" and hashed


def test_files_an_export_wrote_are_not_hashed_at_their_first_load(artifacts, tmp_path, monkeypatch):
    """The export records its files' identities with the digests it took while writing them."""
    known = json.loads((cache_dir() / RECORD_NAME).read_text())
    assert str((artifacts[2] / "unet.onnx").resolve()) in known  # the fixture's export recorded its files
    monkeypatch.setenv("HUMANLIFF_CACHE", str(tmp_path / "cache"))
    folder = _copy(artifacts[2], tmp_path)  # new files: not recorded
    remember_written(folder, read_manifest(folder))
    hashed, real = [], manifest_module.sha256_file
    monkeypatch.setattr(manifest_module, "sha256_file", lambda p: hashed.append(Path(p).name) or real(p))
    assert load_engine(folder, "unet", prefer=("onnx",)).format == "onnx" and hashed == []


def test_shapes_that_disagree_with_the_manifest(artifacts):
    engine = load_engine(artifacts[2], "unet", prefer=("onnx",))
    feeds = {"x": torch.zeros(2, 27, 8, 8), "timesteps": torch.zeros(2, dtype=torch.int64),
             "x_cond": torch.zeros(2, 27, 8, 8), "y": torch.zeros(2, dtype=torch.int64)}
    with pytest.raises(InputFileError, match=r"unet.onnx: input 'x' has shape \[2, 27, 8, 8\], the manifest "
                                             r"says \['batch', 27, 16, 16\]"):
        engine(**feeds)
    big = {k: torch.zeros((5, *v.shape[1:]), dtype=v.dtype) for k, v in feeds.items()}
    big["x"] = big["x_cond"] = torch.zeros(5, 27, 16, 16)
    with pytest.raises(InputFileError, match=r"batch = 5 is outside the exported range \[1, 4\]"):
        engine(**big)
    with pytest.raises(InputFileError, match="inputs .* do not match"):
        engine(x=feeds["x"])


def test_static_batch_engines_pad_smaller_groups(artifacts, tmp_path):
    """``export --static-batch``: UNet engines of exactly the engine batch (traced static, ranges [2, 2, 2]),
    the decoder's batch still dynamic; a group of one is padded to two and gets the human of dynamic engines."""
    ema, store, dynamic = artifacts
    folder = tmp_path / "static"
    args = ["export", "--unet", str(ema), "--store", str(store), "--out", str(folder), "--formats", "onnx",
            "--device", "cpu", "--engine-batch", "2", "--static-batch", *(a for o in FAST for a in ("--set", o))]
    assert CliRunner().invoke(app, args).exit_code == 0
    manifest = read_manifest(folder)
    assert [manifest["networks"][n]["dims"]["batch"] for n in manifest["unet"]["networks"]] == [[2, 2, 2]] * 4
    assert manifest["networks"]["decoder"]["dims"]["batch"][0] == 1
    graph_input = onnx.load(folder / "unet.embed.onnx").graph.input[0].type.tensor_type.shape.dim[0]
    assert graph_input.dim_value == 2 and not graph_input.dim_param
    pipe = Pipeline.from_pretrained(folder, device="cpu", prefer=("onnx",))
    assert pipe.models.unet.batch_range == (2, 2) and pipe.models.group == 2
    one = {k: torch.zeros((1, *v[1:]), dtype=v[0]) for k, v in
           {"x": (torch.float32, 27, 16, 16), "timesteps": (torch.int64,), "x_cond": (torch.float32, 27, 16, 16),
            "y": (torch.int64,)}.items()}
    with pytest.raises(InputFileError, match=r"batch = 1 is outside the exported range \[2, 2\]"):
        pipe.models.unet(**one)
    static = pipe(3, [0, 1], steps=3, seed=5).planes
    expected = Pipeline.from_pretrained(dynamic, device="cpu", prefer=("onnx",))(3, [0, 1], steps=3, seed=5).planes
    assert static.shape == (2, 3, 27, 16, 16)
    torch.testing.assert_close(static, expected, rtol=0, atol=1e-4)


def test_engines_agree_and_fall_back(artifacts):
    folder = artifacts[2]
    onnx = load_engine(folder, "unet", prefer=("tensorrt", "aoti", "onnx", "ep"))
    assert onnx.format == "onnx"
    ep = load_engine(folder, "unet", prefer=("ep",))
    spec = network_spec(read_manifest(folder), "unet")
    g = torch.Generator().manual_seed(3)
    feeds = {"x": torch.randn(3, 27, 16, 16, generator=g), "timesteps": torch.tensor([0, 500, 999]),
             "x_cond": torch.randn(3, 27, 16, 16, generator=g), "y": torch.tensor([0, 1, 3])}
    a, b = onnx(**feeds)["eps"], ep(**feeds)["eps"]
    assert a.shape == (3, 27, 16, 16) and [s.name for s in spec.outputs] == ["eps"]
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))
    with pytest.raises(InputFileError, match=r"no engine for 'unet' runs on cpu \(aoti: absent"):
        load_engine(folder, "unet", prefer=("aoti",))
    with pytest.raises(HumanLiffError, match="unknown engine format"):
        load_engine(folder, "unet", prefer=("trt",))


def test_engines_without_their_package_or_loader_are_skipped(artifacts, tmp_path, monkeypatch):
    spec = NetworkSpec((), (), {})
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` raises ImportError, installed or not
        with pytest.raises(EngineUnavailable, match="tensorrt is not installed"):
            TensorRTEngine(tmp_path / "unet.plan", spec, "cpu").load()
    crashed = {"device": "cpu", "checked_on": device_key(torch.device("cpu")), "loader": "crashed (signal 11)"}
    with pytest.raises(EngineUnavailable, match=r"unet.pt2 does not load here \(crashed \(signal 11\)\)"):
        AOTIEngine(tmp_path / "unet.pt2", spec, "cpu", crashed).load()
    folder = _copy(artifacts[2], tmp_path)
    (folder / "unet.pt2").write_bytes(b"not loaded")
    aoti = {**crashed, "files": {"unet.pt2": sha256_file(folder / "unet.pt2")}, "status": "unverified"}
    _edit_manifest(folder, lambda m: m["networks"]["unet"]["artifacts"].update(aoti=aoti))
    assert load_engine(folder, "unet").format == "torchscript"
    _edit_manifest(folder, lambda m: m["networks"]["unet"]["artifacts"]["ep"].update(device="cuda"))
    with pytest.raises(InputFileError, match=r"no engine for 'unet' runs on cpu \(ep: built for cuda\)"):
        load_engine(folder, "unet", prefer=("ep",))


def test_engine_field_splits_large_calls(artifacts):
    folder = artifacts[2]
    whole = load_engine(folder, "decoder", prefer=("onnx",))
    spec = whole.spec
    limited = NetworkSpec(spec.inputs, spec.outputs, {"batch": (1, 1, 4), "points": (1, 64, 100)})
    small = OnnxEngine(whole.path, limited, "cpu").load()
    planes = torch.randn(1, 27, 16, 16, generator=torch.Generator().manual_seed(0))
    points = torch.rand(2, 250, 3) * 2 - 1
    dirs = torch.nn.functional.normalize(torch.randn(2, 250, 3), dim=-1)
    rgb_a, sigma_a = engine_field(whole, planes)(points, dirs)
    rgb_b, sigma_b = engine_field(small, planes)(points, dirs)
    assert rgb_a.shape == (2, 250, 3) and sigma_a.shape == (2, 250, 1)
    torch.testing.assert_close(rgb_a, rgb_b)
    torch.testing.assert_close(sigma_a, sigma_b)
    none_rgb, sigma_c = engine_field(small, planes)(points, None)
    assert none_rgb is None
    torch.testing.assert_close(sigma_c, sigma_a)


def test_engine_field_pads_calls_below_the_exported_minimum(artifacts):
    """The decoder is traced with points >= 2 (export specializes 0 and 1); one point still works."""
    folder = artifacts[2]
    planes = torch.randn(1, 27, 16, 16, generator=torch.Generator().manual_seed(1))
    points = torch.rand(1, 5, 3) * 2 - 1
    dirs = torch.nn.functional.normalize(torch.randn(1, 5, 3), dim=-1)
    for fmt in ("ep", "onnx"):
        engine = load_engine(folder, "decoder", prefer=(fmt,))
        assert engine.spec.dims["points"][0] == 2
        field = engine_field(engine, planes)
        rgb_all, sigma_all = field(points, dirs)
        rgb_one, sigma_one = field(points[:, 2:3], dirs[:, 2:3])
        assert rgb_one.shape == (1, 1, 3) and sigma_one.shape == (1, 1, 1)
        torch.testing.assert_close(rgb_one, rgb_all[:, 2:3])
        torch.testing.assert_close(sigma_one, sigma_all[:, 2:3])


@pytest.mark.parametrize(("sampler", "eta", "layers", "atol"), [
    ("dpmpp", 0.0, None, 5e-3), ("ddpm", 0.0, [0, 1], 2e-3), ("ddim", 1.0, [0, 1], 2e-3),
    ("dpmpp_sde", 0.0, [0, 1], 2e-3)])
def test_run_reproduces_generate(artifacts, tmp_path, sampler, eta, layers, atol):
    """Every sampler: ``run`` (humans in groups of the manifest's batch 2) = ``generate`` (one batch of 3).

    Both are fp32 roundings of one computation: a UNet call differs from an fp64 one by ~3e-6, which the
    x0 prediction at t = 999 multiplies by sqrt(1/abar - 1) = 157 and the 4-layer chain carries on; at
    seeds 0-5 and 7, each fp32 path of the 4-layer dpmpp case lies up to 2.0e-3 from the fp64 UNet's planes and
    the two up to 2.8e-3 apart, with or without ``keep_top`` (the 2-layer cases: 3.3e-4). Plus fp16 storage (4.9e-4)."""
    ema, store, folder = artifacts
    cfg = load_config("tiny", [*FAST, f"sample.sampler={sampler}", f"sample.eta={eta}", "sample.seed=7",
                               "sample.batch=3"])
    expected = generate(cfg, ema, store, tmp_path / "gen", layers, device="cpu", progress=False)
    pipe = Pipeline.from_pretrained(folder, device="cpu", prefer=("onnx",), overrides=[f"sample.eta={eta}"])
    result = pipe(3, layers, sampler=sampler, steps=cfg.sample.steps, seed=7).save(tmp_path / "run")
    assert pipe.models.engines == {"unet": "onnx", "decoder": "onnx"}
    a = np.load(expected["planes"])["planes"].astype(np.float32)
    b = np.load(result["planes"])["planes"].astype(np.float32)
    n_layers = 4 if layers is None else len(layers)
    assert a.shape == b.shape == (n_layers, 3, 27, 16, 16)
    np.testing.assert_allclose(b, a, atol=atol)  # fp16 storage: one step at 1.0 is 1e-3
    assert len(result["views"]) == len(expected["views"]) == n_layers * 3
    for x, y in zip(expected["views"], result["views"], strict=True):
        assert x.relative_to(tmp_path / "gen") == y.relative_to(tmp_path / "run")
        assert np.abs(iio.imread(x).astype(int) - iio.imread(y).astype(int)).max() <= 2
    names = [sorted(p.name for p in (tmp_path / d).iterdir()) for d in ("gen", "run")]
    assert names[0] == names[1]


def test_run_cli_imports_no_training_code(artifacts, tmp_path):
    folder = artifacts[2]
    code = ("import gc, json, sys; from humanliff.cli import app; app(sys.argv[1:], standalone_mode=False); "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('humanliff')))); "
            "print(gc.get_freeze_count())")
    args = ["run", str(folder), "--out", str(tmp_path / "out"), "--humans", "1", "--steps", "2",
            "--seed", "1", "--layers", "0-1", "--engine", "onnx", "--device", "cpu"]
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    *_, listed, frozen = proc.stdout.strip().splitlines()
    assert int(frozen) > 0  # torch's objects, out of every later collection (options.frozen_imports)
    modules = json.loads(listed)
    assert {"humanliff.pipeline", "humanliff.run_pipeline"} <= set(modules)
    assert not [m for m in modules if m.startswith(FORBIDDEN)]
    assert np.load(tmp_path / "out" / "planes.npz")["planes"].shape == (2, 1, 27, 16, 16)


RUN_MODULES = ("humanliff.cli", "humanliff.pipeline", "humanliff.run_pipeline", "humanliff.generation_result",
               "humanliff.outputs.writer", "humanliff.runtime.engines", "humanliff.runtime.unet_engine",
               "humanliff.runtime.formats", "humanliff.runtime.field", "humanliff.runtime.render",
               "humanliff.runtime.occupancy", "humanliff.runtime.mesh", "humanliff.runtime.layered")
WRITER_ONLY = ("trimesh", "skimage", "scipy", "imageio", "triton", "rich")
"""Imported only where a mesh, a GIF, a cleaned occupancy grid or a fused field is made (start-up time)."""


def test_run_modules_import_no_writer_libraries():
    code = (f"import importlib, sys; [importlib.import_module(m) for m in {RUN_MODULES!r}]; "
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({WRITER_ONLY!r})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_run_rejects_layers_not_from_zero(artifacts, tmp_path):
    with pytest.raises(HumanLiffError, match="--layers must start at 0"):
        Pipeline.from_pretrained(artifacts[2], device="cpu")(1, [1, 2], steps=1)


def test_graphs_only_graphable_engines_on_cuda():
    def call(**feeds):
        raise AssertionError("graphed() must not run the engine when it does not capture")

    assert graphed(call, {}, torch.device("cpu"), True) is call
    assert graphed(call, {}, torch.device("cuda"), False) is call  # a format that cannot be captured (onnx)


def test_ruff_bans_training_imports_in_the_runtime():
    ruff = shutil.which("ruff") or shutil.which("ruff", path=str(Path(sys.executable).parent))
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e .[dev])")
    root = Path(__file__).resolve().parents[1]
    source = ("from humanliff.training.fit_a import fit_stage_a\nimport humanliff.models.unet\n"
              "from humanliff import data\n")
    banned = subprocess.run([ruff, "check", "--select", "TID251", "--stdin-filename", "runtime/probe.py", "-"],
                            input=source, capture_output=True, text=True, cwd=root)
    assert banned.returncode == 1 and banned.stdout.count("TID251") == 3, banned.stdout
    allowed = subprocess.run([ruff, "check", "--select", "TID251", "--stdin-filename", "humanliff/probe.py", "-"],
                             input=source, capture_output=True, text=True, cwd=root)
    assert allowed.returncode == 0, allowed.stdout


def test_unet_parts_match_the_whole_graph_in_every_format(artifacts):
    folder = artifacts[2]
    manifest = read_manifest(folder)
    assert manifest["unet"] == {"layout": "parts", "side_stream": ["unet.encode_control"],
                                "networks": ["unet.embed", "unet.encode_control", "unet.encode", "unet.decode"]}
    whole = load_engine(folder, "unet", prefer=("ep",))
    g = torch.Generator().manual_seed(5)
    feeds = {"x": torch.randn(3, 27, 16, 16, generator=g), "timesteps": torch.tensor([3, 400, 998]),
             "x_cond": torch.randn(3, 27, 16, 16, generator=g), "y": torch.tensor([2, 0, 1])}
    expected = whole(**feeds)["eps"]
    for fmt in ("ep", "onnx", "torchscript"):
        unet = load_unet(folder, manifest, (fmt,), "cpu")
        assert unet.format == fmt and set(unet.engines) == set(manifest["unet"]["networks"])
        torch.testing.assert_close(unet(**feeds)["eps"], expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_parts_that_do_not_connect_are_one_line_errors(artifacts, tmp_path):
    folder = _copy(artifacts[2], tmp_path)
    _edit_manifest(folder, lambda m: m["networks"]["unet.decode"]["inputs"][0].update(name="embedding"))
    with pytest.raises(InputFileError, match="UNet part 'unet.decode' needs 'embedding', which no earlier part"):
        read_manifest(folder)
    _edit_manifest(folder, lambda m: m["unet"].update(networks=["unet.embed", "unet.encode"]))
    with pytest.raises(InputFileError, match="the UNet's last part must produce only 'eps'"):
        read_manifest(folder)


def test_torchscript_loads_in_a_process_without_humanliff(artifacts):
    folder = artifacts[2]
    code = ("import sys, torch; m = torch.jit.load(sys.argv[1]); x = torch.ones(1, 27, 16, 16); "
            "t = torch.tensor([10]); print(float(m(x, t, x, t.remainder(4)).sum())); "
            "assert not [k for k in sys.modules if k.startswith('humanliff')]")
    proc = subprocess.run([sys.executable, "-c", code, str(folder / "unet.ts")], capture_output=True, text=True,
                          timeout=120, cwd="/")
    assert proc.returncode == 0, proc.stderr[-1000:]
    engine = load_engine(folder, "unet", prefer=("ep",))
    x, t = torch.ones(1, 27, 16, 16), torch.tensor([10])
    expected = float(engine(x=x, timesteps=t, x_cond=x, y=t.remainder(4))["eps"].sum())
    assert float(proc.stdout.strip()) == pytest.approx(expected, rel=1e-4, abs=1e-4)


def test_run_compiles_nothing(artifacts, tmp_path, monkeypatch):
    """The runtime's engines are loaded, never compiled: Dynamo and Inductor entry points raise if called."""
    import torch._dynamo
    import torch._inductor.compile_fx

    def forbidden(*args, **kwargs):
        raise AssertionError("the runtime compiled something")

    monkeypatch.setattr(torch, "compile", forbidden)
    monkeypatch.setattr(torch._dynamo, "optimize", forbidden)
    monkeypatch.setattr(torch._inductor.compile_fx, "compile_fx", forbidden)
    for fmt in ("torchscript", "onnx", "ep"):
        pipe = Pipeline.from_pretrained(artifacts[2], device="cpu", prefer=(fmt,))
        pipe(1, [0, 1], steps=2).save(tmp_path / fmt)
        assert pipe.models.engines["unet"] == fmt


def test_format_registry_drives_cli_and_preference():
    from humanliff.cli import FORMAT_NAMES, UNET_LAYOUTS
    from humanliff.export.artifacts import UNET_LAYOUTS as LAYOUTS

    assert FORMAT_NAMES == PREFERENCE == tuple(FORMATS) and UNET_LAYOUTS == LAYOUTS
    assert PREFERENCE.index("aoti") < PREFERENCE.index("torchscript") < PREFERENCE.index("onnx") \
        < PREFERENCE.index("ep")
    assert [f for f, r in FORMATS.items() if r.portable] == ["onnx"]
    assert {f for f, r in FORMATS.items() if r.graphable} == {"tensorrt", "aoti", "torchscript", "ep"}
    assert FORMATS["tensorrt"].builds_from == "onnx"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_replay_matches_eager(artifacts, tmp_path):
    ema, store, _ = artifacts
    export_artifacts(ema, store, tmp_path / "cuda", "ep", batch=2, device="cuda", overrides=FAST, progress=False)
    engine = load_engine(tmp_path / "cuda", "unet", prefer=("ep",), device="cuda")
    feeds = {"x": torch.randn(2, 27, 16, 16, device="cuda"), "timesteps": torch.tensor([1, 900]).cuda(),
             "x_cond": torch.randn(2, 27, 16, 16, device="cuda"), "y": torch.tensor([0, 2]).cuda()}
    replay = graphed(engine, feeds, engine.device, True)
    assert replay is not engine
    torch.testing.assert_close(replay(**feeds)["eps"], engine(**feeds)["eps"])


def test_runtime_benchmark_runs_a_step_only_when_it_fits_the_budget(tmp_path):
    from benchmarks.report import Report
    from benchmarks.runtime import Budget, _torch_calls

    rep = Report("cpu", [tmp_path])
    calls = []

    def fn(x, t, x_cond, y):
        calls.append(x.shape[0])
        return x

    per_call, first_s = _torch_calls(rep, (fn, "fake"), torch.device("cpu"), 8, (1, 2), Budget(None))
    assert set(per_call) == {1, 2} and first_s >= 0 and set(calls) == {1, 2}
    assert [r.name for r in rep.rows] == ["torch (fake): UNet call, batch 1", "torch (fake): UNet call, batch 2"]
    per_call, _ = _torch_calls(rep, (fn, "fake"), torch.device("cpu"), 8, (3,), Budget(60.0), estimate_s=120.0)
    assert per_call == {} and 3 not in calls and "about 120 s" in rep.errors["runtime-torch-batch-3"]


def test_runtime_benchmark_reuses_only_a_complete_export(artifacts, tmp_path):
    from benchmarks.runtime import _complete_export

    folder = artifacts[2]
    assert _complete_export(folder, ("onnx", "torchscript"), "frozen", False) is not None
    assert _complete_export(folder, ("onnx", "torchscript"), "frozen", True) is None  # its batch is dynamic
    assert _complete_export(folder, ("aoti",), "frozen", False) is None
    assert _complete_export(tmp_path / "none", ("onnx",), "frozen", False) is None
    copy = _copy(folder, tmp_path)
    _edit_manifest(copy, lambda m: m["networks"]["decoder"]["artifacts"]["onnx"].update(status="failed"))
    assert _complete_export(copy, ("onnx",), "frozen", False) is None
