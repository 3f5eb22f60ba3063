"""``humanliff export``: specs, ONNX / torch.export artifacts checked against torch, manifest, no TensorRT."""

import copy
import importlib.util
import json

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from tiny_models import make_tiny_models

from humanliff.cli import app
from humanliff.config import load_config
from humanliff.errors import HumanLiffError
from humanliff.export.artifacts import export_artifacts, export_network, float32_reference, parse_formats, torch_decoder
from humanliff.export.spec import (
    AUTOCAST_LOWERED,
    DecoderGraph,
    UNetGraph,
    decoder_spec,
    shared_compute_weights,
    unet_part_specs,
    unet_spec,
    with_compute_weights,
)
from humanliff.models.decoder import build_decoder
from humanliff.models.unet import build_unet
from humanliff.output_sizes import artifacts_bytes
from humanliff.runtime.formats import EngineUnavailable
from humanliff.runtime.formats.aoti_compiler import (
    DEFAULT_TUNING,
    PACKAGE_CONFIG,
    TUNINGS,
    candidates,
    choose_compiler,
    compile_package,
)
from humanliff.runtime.formats.base import (
    TOLERANCE,
    TORCH_ERROR_FACTOR,
    WriteJob,
    check_outputs,
    max_rel_error,
    run_isolated,
)
from humanliff.runtime.formats.onnx import write_onnx
from humanliff.runtime.formats.tensorrt import build_plan, profile
from humanliff.runtime.manifest import MANIFEST_VERSION, read_manifest, sha256_file
from humanliff.store import open_store

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def _perturbed_tiny_unet() -> torch.nn.Module:
    """The tiny UNet with seeded weights nudged off their init (so every part's output is non-trivial)."""
    torch.manual_seed(0)
    unet = build_unet(load_config("tiny").unet, 16)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return unet


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Artifacts of the tiny models written by the CLI (ep, onnx; tensorrt asked for but absent)."""
    root = tmp_path_factory.mktemp("export")
    ema, store, _ = make_tiny_models(root)
    out = root / "artifacts"
    result = CliRunner().invoke(app, ["export", "--unet", str(ema), "--store", str(store), "--out", str(out),
                                      "--formats", "ep,tensorrt", "--engine-batch", "2", "--device", "cpu",
                                      "--unet-layout", "whole", "--set", "sample.image_size=20"])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_disk_estimate_of_the_artifacts_matches_the_real_size(exported):
    out, _ = exported
    estimate = artifacts_bytes(out.parent / "ema.pt", out.parent / "store", ["ep", "onnx"], "whole")
    real = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    assert 0.75 * real <= estimate <= 1.25 * real, (estimate, real)


def test_unet_spec_inputs_profile_and_limits():
    spec = unet_spec(16, 27, 4, 1000, max_batch=4)
    feeds = spec.sample_inputs({"batch": 3}, torch.Generator().manual_seed(0))
    assert list(feeds) == ["x", "timesteps", "x_cond", "y"]
    assert feeds["x"].shape == (3, 27, 16, 16) and feeds["x"].dtype == torch.float32
    assert feeds["timesteps"].dtype == torch.int64 and 0 <= int(feeds["timesteps"].min()) < 1000
    assert int(feeds["y"].max()) < 4
    assert profile(spec.network_spec({"batch": 2}))["x"] == ((1, 27, 16, 16), (2, 27, 16, 16), (4, 27, 16, 16))
    assert spec.dynamic_shapes()[3][0].__name__ == "batch"
    assert spec.network_spec({"batch": 2}).dims == {"batch": (1, 2, 4)}
    with pytest.raises(HumanLiffError, match=r"batch = 5 is outside the supported range \[1, 4\]"):
        spec.sample_inputs({"batch": 5})


def test_decoder_spec_sample_inputs():
    spec = decoder_spec(8, 27, max_batch=2)
    feeds = spec.sample_inputs({"batch": 1, "points": 50}, torch.Generator().manual_seed(0))
    assert feeds["planes"].shape == (1, 27, 8, 8) and feeds["points"].shape == (1, 50, 3)
    assert feeds["points"].abs().max() <= 1.1
    torch.testing.assert_close(feeds["viewdirs"].norm(dim=-1), torch.ones(1, 50))
    assert [s.name for s in spec.outputs] == ["rgb_raw", "sigma_raw"]


def test_parse_formats():
    assert parse_formats("onnx,ep") == ["ep", "onnx"]
    assert parse_formats("tensorrt") == ["onnx", "tensorrt"]
    assert parse_formats("aoti,torchscript") == ["torchscript", "aoti"]
    assert parse_formats("auto", torch.device("cpu")) == ["ep", "onnx"]
    assert parse_formats("auto", torch.device("cuda")) == ["ep", "torchscript", "aoti"]
    with pytest.raises(HumanLiffError, match="unknown export format.*trt"):
        parse_formats("onnx,trt")


def test_unet_parts_compose_to_the_whole_unet():
    unet = _perturbed_tiny_unet()
    parts = unet_part_specs(unet, 16, 27, 4, 1000, 4, torch.float32)
    assert [spec.name for _, spec in parts] == ["unet.embed", "unet.encode_control", "unet.encode", "unet.decode"]
    decode = parts[-1][1]
    blocks = len(unet.input_blocks)
    assert [s.name for s in decode.inputs] == ["emb", *(f"h{i}" for i in range(blocks)),
                                               *(f"c{i}" for i in range(blocks))]
    assert parts[2][1].outputs[0].shape == ("batch", 32, 16, 16) and decode.outputs[0].name == "eps"
    feeds = unet_spec(16, 27, 4, 1000, 4).sample_inputs({"batch": 3}, torch.Generator().manual_seed(1))
    values = dict(feeds)
    for graph, spec in parts:
        out = graph(*(values[s.name] for s in spec.inputs))
        values.update(zip([s.name for s in spec.outputs], out if isinstance(out, tuple) else (out,), strict=True))
    torch.testing.assert_close(values["eps"], UNetGraph(unet)(**feeds))


def test_aoti_compiler_candidates_and_refusal(monkeypatch, tmp_path):
    monkeypatch.setenv("HUMANLIFF_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "no-such-compiler-xyz")
    found = candidates()
    assert found and "no-such-compiler-xyz" not in found  # absent $CXX skipped, g++ / c++ found once
    assert len({__import__("os").path.realpath(c) for c in found}) == len(found)
    with pytest.raises(EngineUnavailable, match="--cxx /nope/g\\+\\+: no such compiler"):
        candidates("/nope/g++")
    monkeypatch.setattr("humanliff.runtime.formats.aoti_compiler._probe", lambda cxx, device: "crashed (signal 11)")
    with pytest.raises(EngineUnavailable, match=r"no C\+\+ compiler builds AOTInductor packages that load here "
                                                r"\(.*crashed \(signal 11\)"):
        choose_compiler(torch.device("cpu"))
    monkeypatch.setattr("humanliff.runtime.formats.aoti_compiler._probe", lambda cxx, device: "ok")
    # cached outcomes win over a new probe: the crash recorded above is remembered per compiler
    with pytest.raises(EngineUnavailable, match="crashed"):
        choose_compiler(torch.device("cpu"))
    (tmp_path / "aoti-compilers.json").unlink()
    cxx, tried = choose_compiler(torch.device("cpu"))
    assert cxx == found[0] and tried == {found[0]: "ok"}


def test_max_rel_error():
    ref = {"a": torch.tensor([1.0, -2.0]), "b": torch.tensor([4.0])}
    assert max_rel_error(ref, ref) == 0.0
    off = {"a": torch.tensor([1.0, -1.0]), "b": torch.tensor([4.0])}
    assert max_rel_error(off, ref) == pytest.approx(0.5)


def test_onnx_rejects_opset_20(tmp_path):
    graph = DecoderGraph(build_decoder(load_config("tiny").decoder))
    spec = decoder_spec(8, 27, 2)
    example = tuple(spec.sample_inputs({"batch": 1, "points": 8}).values())
    program = torch.export.export(graph, example)
    job = WriteJob("decoder", program, graph, example, spec.network_spec({"batch": 1, "points": 8}), tmp_path,
                   torch.device("cpu"), "fp32", {"opset": 20})
    with pytest.raises(HumanLiffError, match="opset 20 is not supported.*GridSample"):
        write_onnx(job)


def test_export_writes_checked_artifacts_and_manifest(exported):
    out, output = exported
    manifest = read_manifest(out)
    assert manifest["version"] == MANIFEST_VERSION and manifest["layers"] == 4 and manifest["batch"] == 2
    assert manifest["triplane"]["resolution"] == 16 and manifest["compute_dtype"] == "fp32"
    assert manifest["diffusion"] == {"steps": 1000, "beta_start": 1e-4, "beta_end": 0.02}
    assert manifest["sample"]["image_size"] == 20 and manifest["cameras"]["image_size"] == 20
    assert np.asarray(manifest["cameras"]["K"]).shape == (manifest["sample"]["views"], 3, 3)
    np.testing.assert_allclose(manifest["bounds"], [[-0.5, -1.0, -0.3], [0.5, 1.0, 0.3]])
    unet = manifest["networks"]["unet"]
    assert [i["name"] for i in unet["inputs"]] == ["x", "timesteps", "x_cond", "y"]
    assert unet["inputs"][0] == {"name": "x", "shape": ["batch", 27, 16, 16], "dtype": "float32"}
    assert unet["dims"] == {"batch": [1, 2, 4]}
    decoder = manifest["networks"]["decoder"]
    assert [o["name"] for o in decoder["outputs"]] == ["rgb_raw", "sigma_raw"]
    for net in (unet, decoder):
        arts = net["artifacts"]
        assert set(arts) == {"ep", "onnx", "tensorrt"}
        for fmt in ("ep", "onnx"):
            assert arts[fmt]["status"] == "ok" and arts[fmt]["export_s"] > 0
            assert arts[fmt]["check"]["max_rel_err"] < 1e-5
            for name, digest in arts[fmt]["files"].items():
                assert sha256_file(out / name) == digest
        if not HAS_TENSORRT:
            assert arts["tensorrt"]["status"] == "not_run"
            assert "tensorrt is not installed" in arts["tensorrt"]["error"]
    assert "unet.onnx: ok, max rel err" in output
    model = onnx.load(out / "unet.onnx")
    assert model.opset_import[0].version == 18
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # dynamic batch


def test_export_tcnn_decoder_through_its_torch_twin(tmp_path):
    _, store, decoder = make_tiny_models(tmp_path, decoder_backend="tcnn")
    twin = torch_decoder(open_store(store), torch.device("cpu"))
    assert twin.backend == "torch"
    feats, dirs = torch.randn(20, 27), torch.nn.functional.normalize(torch.randn(20, 3), dim=-1)
    for a, b in zip(twin(feats, dirs), decoder(feats, dirs), strict=True):
        torch.testing.assert_close(a, b)


def test_export_bad_inputs(tmp_path):
    ema, store, _ = make_tiny_models(tmp_path)
    runner = CliRunner()
    base = ["export", "--unet", str(ema), "--store", str(store), "--out", str(tmp_path / "a")]
    result = runner.invoke(app, [*base, "--formats", "onnx,engine"])
    assert result.exit_code == 1 and "unknown export format(s) engine" in result.output
    missing = runner.invoke(app, ["export", "--unet", str(tmp_path / "none.pt"), "--store", str(store),
                                  "--out", str(tmp_path / "a")])
    assert missing.exit_code == 1 and "none.pt: no such file" in missing.output
    compiler = runner.invoke(app, [*base, "--formats", "aoti", "--cxx", "/nope/g++"])
    assert compiler.exit_code == 1 and compiler.output.strip().endswith("--cxx /nope/g++: no such compiler")
    assert not (tmp_path / "a").exists()


@pytest.mark.skipif(HAS_TENSORRT, reason="checks the message shown without tensorrt")
def test_tensorrt_absent_is_one_clear_error(tmp_path):
    with pytest.raises(EngineUnavailable, match="tensorrt is not installed"):
        build_plan(tmp_path / "m.onnx", tmp_path / "m.plan", unet_spec(16, 27, 4, 1000, 2).network_spec({"batch": 1}))


def test_isolated_check_survives_a_crash():
    crash = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"
    assert run_isolated(crash, []) == "crashed (signal 11)"
    assert run_isolated("import sys; sys.exit('no loader ' + sys.argv[1])", ["x"]) == "error: no loader x"
    assert run_isolated("pass", []) == "ok"


@pytest.mark.slow
def test_aoti_decoder_compiles_loads_in_subprocess_and_matches(tmp_path):
    """AOTInductor on the CPU: the compiler probe, the package (weights as a blob, frozen) checked in a
    subprocess."""
    graph = DecoderGraph(build_decoder(load_config("tiny").decoder))
    spec = decoder_spec(16, 27, 2)
    record = export_network(graph, spec, {"batch": 1, "points": 64}, tmp_path, ["aoti"], torch.device("cpu"),
                            "fp32", {"aoti_tuning": "frozen"})
    art = record["artifacts"]["aoti"]
    assert art["status"] == "ok", json.dumps(art)
    assert art["tuning"] == "frozen" and art["inductor_configs"] == TUNINGS["frozen"]
    assert set(art["files"]) == {"decoder.pt2"} and art["bytes"] == (tmp_path / "decoder.pt2").stat().st_size
    assert art["loader"] == "ok" and art["compiler"] in art["compilers"] and art["load_s"] > 0
    assert art["check"]["max_rel_err"] < 1e-5 and art["checked_on"].endswith("/cpu")


def test_unet_graph_computes_in_bf16_with_float32_io():
    unet = _perturbed_tiny_unet()
    reference = UNetGraph(copy.deepcopy(unet))
    graph = UNetGraph(unet, torch.bfloat16)
    feeds = unet_spec(16, 27, 4, 1000, 2).sample_inputs({"batch": 2}, torch.Generator().manual_seed(0))
    out = graph(*feeds.values())
    assert out.dtype == torch.float32
    assert 1e-4 < max_rel_error({"eps": out}, {"eps": reference(*feeds.values())}) < TOLERANCE["bf16"]


def test_bf16_engines_are_checked_against_float32_with_torch_own_error_allowed():
    unet = _perturbed_tiny_unet()
    spec = unet_spec(16, 27, 4, 1000, 2)
    feeds = spec.sample_inputs({"batch": 2}, torch.Generator().manual_seed(0))
    exact = float32_reference(UNetGraph(copy.deepcopy(unet)), spec, feeds)
    assert exact.torch_rel_err == 0.0
    graph = UNetGraph(unet, torch.bfloat16)
    reference = float32_reference(graph, spec, feeds)
    assert graph.dtype == torch.bfloat16  # restored after the float32 pass
    assert torch.equal(reference.outputs["eps"], exact.outputs["eps"])
    assert 1e-4 < reference.torch_rel_err < TOLERANCE["bf16"]
    eager = graph(*feeds.values())
    check = check_outputs({"eps": eager}, reference, "bf16")
    assert check["passed"] and check["max_rel_err"] == pytest.approx(reference.torch_rel_err)
    scale = exact.outputs["eps"].abs().max()
    far = exact.outputs["eps"] + 1.01 * max(TOLERANCE["bf16"], TORCH_ERROR_FACTOR * reference.torch_rel_err) * scale
    assert not check_outputs({"eps": far}, reference, "bf16")["passed"]


def test_compute_weights_copy_gives_the_autocast_outputs_with_half_the_conv_bytes():
    torch.manual_seed(0)
    graph = UNetGraph(build_unet(load_config("tiny").unet, 16), torch.bfloat16)
    feeds = unet_spec(16, 27, 4, 1000, 2).sample_inputs({"batch": 2}, torch.Generator().manual_seed(0))
    lowered = with_compute_weights(graph)
    assert torch.equal(lowered(*feeds.values()), graph(*feeds.values()))
    kinds = {torch.nn.Conv2d: set(), torch.nn.Linear: set(), torch.nn.GroupNorm: set()}
    for module in lowered.modules():
        for kind, seen in kinds.items():
            if isinstance(module, kind):
                seen.add(module.weight.dtype)
    assert kinds == {torch.nn.Conv2d: {torch.bfloat16}, torch.nn.Linear: {torch.bfloat16},
                     torch.nn.GroupNorm: {torch.float32}}
    assert all(p.dtype == torch.float32 for p in graph.parameters())  # the original is left as it was
    assert with_compute_weights(UNetGraph(graph.unet)).unet is graph.unet  # float32: nothing copied


def test_unet_parts_share_one_lowered_unet_and_the_float32_weights():
    unet = _perturbed_tiny_unet()
    parts = unet_part_specs(unet, 16, 27, 4, 1000, 2, torch.bfloat16)
    graphs = [graph for graph, _ in parts]
    lowered = shared_compute_weights(graphs)
    assert len({id(g.unet) for g in lowered}) == 1 and lowered[0].unet is not unet
    kept = {id(p) for p in unet.parameters()}
    for module in lowered[0].unet.modules():
        for p in module.parameters(recurse=False):
            assert (p.dtype == torch.bfloat16) == isinstance(module, AUTOCAST_LOWERED)
            assert (id(p) in kept) == (p.dtype == torch.float32)  # only the lowered weights are new tensors
    assert all(p.dtype == torch.float32 for p in unet.parameters())
    feeds = parts[0][1].sample_inputs({"batch": 2}, torch.Generator().manual_seed(0))
    assert torch.equal(lowered[0](*feeds.values()), with_compute_weights(graphs[0])(*feeds.values()))


def test_aoti_tuning_sets_inductor_configs_and_unknown_one_is_refused(tmp_path, monkeypatch):
    import torch._inductor

    seen = []
    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package",
                        lambda program, package_path, inductor_configs: seen.append(
                            (inductor_configs, torch.is_grad_enabled())))
    for tuning in ("plain", "frozen", "autotune"):
        compile_package(None, tmp_path / "m.pt2", "g++", tuning)
    assert seen[0] == (PACKAGE_CONFIG, False)
    assert seen[1][0] == {**PACKAGE_CONFIG, "freezing": True, "force_layout_optimization": True}
    assert seen[2][0] == {**seen[1][0], "max_autotune": True, "coordinate_descent_tuning": True}
    with pytest.raises(HumanLiffError, match="--aoti-tuning fast is not one of plain, frozen, autotune"):
        export_artifacts(tmp_path / "no-ema.pt", tmp_path / "no-store", tmp_path / "out", "onnx",
                         aoti_tuning="fast", device="cpu")
    assert not (tmp_path / "out").exists()


def test_export_help_names_every_aoti_tuning_and_the_default():
    text = " ".join(CliRunner().invoke(app, ["export", "--help"], terminal_width=200).output.split())
    assert f"Inductor settings: {', '.join(TUNINGS)}. [default: {DEFAULT_TUNING}]" in text
