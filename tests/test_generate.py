"""``humanliff generate``: tiny random UNet and store, outputs, seeds, dressing a body, bad specs."""


import imageio.v3 as iio
import numpy as np
import pytest
from click.testing import CliRunner
from tiny_models import make_tiny_models

from humanliff.cli import app
from humanliff.config import load_config
from humanliff.ema_file import write_ema
from humanliff.errors import HumanLiffError
from humanliff.generate import generate
from humanliff.models.unet import build_unet
from humanliff.pipeline import parse_from, resolve_layers
from humanliff.store import open_store

FAST = ["sample.views=1", "sample.turntable_frames=2", "sample.image_size=16", "sample.mesh_resolution=12",
        "render.occupancy_resolution=0"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny store (subjects a, b; random planes and decoder) and a tiny ema.pt with random weights."""
    ema, store, _ = make_tiny_models(tmp_path_factory.mktemp("models"))
    return ema, store


def test_generate_writes_all_outputs(models, tmp_path):
    ema, store = models
    cfg = load_config("tiny")
    result = generate(cfg, ema, store, tmp_path / "out", device="cpu", progress=False)
    saved = np.load(result["planes"])
    batch, size = cfg.sample.batch, cfg.sample.image_size
    assert saved["planes"].shape == (4, batch, 27, 16, 16) and saved["planes"].dtype == np.float16
    assert saved["layers"].tolist() == [0, 1, 2, 3]
    assert np.abs(saved["planes"]).max() <= 1.0
    assert not np.allclose(saved["planes"][0], saved["planes"][1])
    np.testing.assert_array_equal(saved["bounds"], open_store(store).bounds[0])
    assert len(result["views"]) == 4 * batch * cfg.sample.views
    assert iio.imread(result["views"][0]).shape == (size, size, 3)
    assert iio.imread(result["contact_sheet"]).shape[1] > 4 * size
    gif = iio.imread(result["turntables"][0])
    assert gif.shape == (cfg.sample.turntable_frames, size, 4 * size, 3)
    assert len(result["meshes"]) == 2 * 4 * batch
    assert all(p.is_file() and p.suffix in (".ply", ".glb") for p in result["meshes"])
    page = result["viewer"].read_text()
    assert result["viewer"].name == "viewer.html" and page.count("data:image/jpeg;base64,") == 4 * batch


def test_meshes_off_writes_no_mesh(models, tmp_path):
    ema, store = models
    cfg = load_config("tiny", [*FAST, "sample.batch=1", "sample.meshes=false"])
    result = generate(cfg, ema, store, tmp_path / "out", [0], device="cpu", progress=False)
    assert result["meshes"] == [] and not list((tmp_path / "out").rglob("*.ply")) and result["views"]


def _planes(models, out, seed, batch, layers=None, sampler=()):
    ema, store = models
    cfg = load_config("tiny", [*FAST, f"sample.seed={seed}", f"sample.batch={batch}", *sampler])
    return np.load(generate(cfg, ema, store, out, layers, device="cpu", progress=False)["planes"])["planes"]


@pytest.mark.parametrize(("sampler", "layers"), [(("sample.sampler=dpmpp",), [0, 1]), (("sample.sampler=ddpm",), [0]),
                                               (("sample.sampler=ddim", "sample.eta=1"), [0]),
                                               (("sample.sampler=dpmpp_sde",), [0])])
def test_seed_determinism_and_per_human_seeds(models, tmp_path, sampler, layers):
    a = _planes(models, tmp_path / "a", seed=5, batch=2, layers=layers, sampler=sampler)
    b = _planes(models, tmp_path / "b", seed=5, batch=2, layers=layers, sampler=sampler)
    c = _planes(models, tmp_path / "c", seed=6, batch=1, layers=layers, sampler=sampler)
    assert np.array_equal(a, b)
    np.testing.assert_allclose(a[:, 1:2].astype(np.float32), c.astype(np.float32), atol=2e-3)
    assert not np.allclose(a[:, 0], a[:, 1])


def test_from_dresses_a_fitted_body(models, tmp_path):
    ema, store = models
    cfg = load_config("tiny", [*FAST, "sample.batch=2"])
    result = generate(cfg, ema, store, tmp_path / "out", from_spec=f"{store}:b:1", device="cpu",
                      progress=False)
    saved = np.load(result["planes"])
    assert saved["layers"].tolist() == [1, 2, 3] and saved["planes"].shape[:2] == (3, 2)
    fitted = open_store(store)
    for human in range(2):
        np.testing.assert_array_equal(saved["planes"][0, human], fitted.planes[1, 1])
    np.testing.assert_array_equal(saved["bounds"], fitted.bounds[1])
    assert (tmp_path / "out" / "layer_1" / "human_000.png").is_file()
    with pytest.raises(HumanLiffError, match="--layers must start at 2, the layer above --from's 1"):
        generate(cfg, ema, store, tmp_path / "bad", [1, 2], from_spec=f"{store}:b:1", device="cpu")
    with pytest.raises(HumanLiffError, match="no subject 'zz'"):
        generate(cfg, ema, store, tmp_path / "bad", from_spec=f"{store}:zz:0", device="cpu")
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize(("spec", "message"), [
    ("store:a", "not of the form STORE:SUBJECT:LAYER"),
    ("store::1", "not of the form"),
    ("store:a:x", "LAYER must be 0..2"),
    ("store:a:3", "LAYER must be 0..2"),
])
def test_parse_from_rejects(spec, message):
    with pytest.raises(HumanLiffError, match=message):
        parse_from(spec)


def test_parse_from_and_resolve_layers():
    start = parse_from("C:/data/store:subject_7:0")
    assert (str(start.store), start.subject, start.layer) == ("C:/data/store", "subject_7", 0)
    assert resolve_layers(None, None) == [0, 1, 2, 3]
    assert resolve_layers(None, start) == [1, 2, 3]
    assert resolve_layers([1, 2], start) == [1, 2]
    with pytest.raises(HumanLiffError, match="--layers must start at 0"):
        resolve_layers([1, 2, 3], None)


def test_missing_model_and_mismatched_store(models, tmp_path):
    ema, store = models
    cfg = load_config("tiny")
    with pytest.raises(HumanLiffError, match="no --unet given \\(pass a training run"):
        generate(cfg, None, store, tmp_path / "out")
    with pytest.raises(HumanLiffError, match="no --store given"):
        generate(cfg, ema, None, tmp_path / "out")
    with pytest.raises(HumanLiffError, match=r"sample.batch=0 is not allowed \(allowed: at least 1\)"):
        generate(load_config("tiny", ["sample.batch=0"]), ema, store, tmp_path / "out")
    big = load_config("tiny", ["triplane.resolution=32"])
    wrong = write_ema(tmp_path / "ema.pt", build_unet(big.unet, 32).state_dict(), big.to_dict(), {})
    with pytest.raises(HumanLiffError, match="tri-planes are 27x16\\^2 but the UNet"):
        generate(cfg, wrong, store, tmp_path / "out")


def test_cli_generate(models, tmp_path):
    ema, store = models
    runner = CliRunner()
    overrides = [x for item in FAST for x in ("--set", item)]
    base = ["generate", "--config", "tiny", *overrides, "--unet", str(ema), "--store", str(store),
            "--out", str(tmp_path / "out"), "--device", "cpu"]
    ok = runner.invoke(app, [*base, "--humans", "1", "--steps", "2", "--sampler", "ddim", "--seed", "3",
                             "--layers", "0-1"])
    assert ok.exit_code == 0, ok.output
    assert "contact sheet" in ok.output
    saved = np.load(tmp_path / "out" / "planes.npz")
    assert saved["planes"].shape[:2] == (2, 1)
    for args, message in [(["--layers", "0-7"], "'0-7' is not a layer range"),
                          (["--from", "nowhere"], "not of the form STORE:SUBJECT:LAYER"),
                          (["--layers", "2-3"], "--layers must start at 0")]:
        bad = runner.invoke(app, [*base, *args])
        assert bad.exit_code == 1 and message in bad.output, bad.output
    missing = runner.invoke(app, ["generate", "--store", str(store)])
    assert missing.exit_code == 1
    assert "error: no --unet given (pass a training run" in missing.output


def test_default_model_is_used_without_checkpoints(tmp_path):
    """With neither --unet nor --store, the packaged default model generates (tiny output sizes)."""
    from humanliff.pretrained import default_model, model_config

    ema, store = default_model()
    cfg = model_config(ema).with_overrides(["sample.batch=1", "sample.image_size=16", "sample.views=1",
                                             "sample.turntable_frames=1", "sample.mesh_resolution=8",
                                             "sample.steps=2", "render.n_samples=4", "render.n_importance=4"])
    result = generate(cfg, None, None, tmp_path / "out", layers=[0], device="cpu", progress=False)
    assert result["contact_sheet"].is_file()
    assert np.load(result["folder"] / "planes.npz")["planes"].shape[-1] == cfg.triplane.resolution
