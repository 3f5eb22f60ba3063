"""``eval gen``: the metric math against direct computations, the FID network's weights file, the command."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from scipy import linalg
from tiny_models import make_tiny_models

from humanliff.cli import app
from humanliff.config import load_config
from humanliff.errors import InputFileError
from humanliff.evaluation.generation import evaluate_generation
from humanliff.evaluation.inception import FIDInception, inception_features, load_inception
from humanliff.evaluation.metrics import (
    GENERATION_METRICS,
    HumanLayer,
    containment,
    drift_psnr,
    frechet_distance,
    haze,
    kernel_distance,
    knn_precision_recall,
)
from humanliff.runtime.occupancy import build_occupancy, largest_component
from humanliff.store import open_store

RNG = np.random.default_rng(0)


def _direct_frechet(a, b):
    """|mu_a - mu_b|^2 + Tr S_a + Tr S_b - 2 sum sqrt(eig(S_a S_b)), in plain numpy."""
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    eig = np.linalg.eigvals(sa @ sb)
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(sa) + np.trace(sb)
                 - 2 * np.sqrt(np.clip(eig.real, 0, None)).sum())


def test_frechet_distance():
    a = RNG.normal(size=(200, 5))
    b = RNG.normal(size=(150, 5)) @ np.diag([1, 2, 0.5, 1, 3]) + 0.7
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(a, b) == pytest.approx(_direct_frechet(a, b), rel=1e-8)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    scipy_value = (((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(sa + sb)
                   - 2 * np.trace(linalg.sqrtm(sa @ sb).real))
    assert frechet_distance(a, b) == pytest.approx(scipy_value, rel=1e-8)
    few = RNG.normal(size=(4, 300)), RNG.normal(size=(3, 300)) + 0.1  # fewer samples than dimensions
    assert frechet_distance(*few) == pytest.approx(_direct_frechet(*few), rel=1e-6)
    # one dimension: (mu_a - mu_b)^2 + (s_a - s_b)^2
    x, y = np.array([[0.0], [2.0]]), np.array([[1.0], [5.0]])
    assert frechet_distance(x, y) == pytest.approx((1.0 - 3.0) ** 2 + (np.sqrt(2) - np.sqrt(8)) ** 2)
    with pytest.raises(ValueError, match="two samples"):
        frechet_distance(a[:1], b)


def test_kernel_distance_is_the_unbiased_mmd():
    a, b = RNG.normal(size=(6, 3)), RNG.normal(size=(6, 3)) + 1.0

    def k(x, y):
        return (x @ y / 3 + 1) ** 3

    n = 6
    xx = sum(k(a[i], a[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(b[i], b[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(a[i], b[j]) for i in range(n) for j in range(n)) / n**2
    assert kernel_distance(a, b, subsets=3) == pytest.approx(xx + yy - 2 * xy, rel=1e-10)


def test_knn_precision_recall_by_hand():
    real = np.arange(5.0)[:, None]  # k = 1: every radius is 1
    fake = np.array([[0.5], [2.2], [100.0], [101.0]])  # radii: 1.7, 1.7, 1, 1
    precision, recall = knn_precision_recall(real, fake, k=1)
    assert precision == 0.5  # 0.5 and 2.2 lie within 1 of a real point
    assert recall == 0.8  # reals 0, 1, 2, 3 lie within 1.7 of 0.5 or 2.2; 4 does not
    assert knn_precision_recall(real, real) == (1.0, 1.0)


def _human(occupied, density=None, renders=None):
    renders = np.zeros((1, 4, 4, 3), np.float32) if renders is None else renders
    density = occupied.astype(np.float32) if density is None else density
    return HumanLayer(density, occupied, renders, np.ones((1, 4, 4), bool))


def test_containment_haze_and_drift():
    grid = np.zeros((8, 8, 8), bool)
    grid[1:5, 1:5, 1:5] = True
    floater = grid.copy()
    floater[7, 7, 7] = True
    shrunk = grid.copy()
    shrunk[1] = False
    assert containment(_human(floater), _human(grid)) == 1.0
    assert containment(_human(shrunk), _human(grid)) == 0.75
    assert containment(_human(grid), None) is None
    assert haze(_human(grid), None) == 0.0
    density = floater * 2.0
    density[0, 0, 0] = 0.5  # fog below the iso-level counts as haze too
    assert haze(_human(floater, density), None) == pytest.approx(2.5 / 130.5)
    bright = _human(grid, renders=np.full((1, 4, 4, 3), 0.1, np.float32))
    assert drift_psnr(bright, _human(grid)) == pytest.approx(20.0)
    assert set(GENERATION_METRICS) == {"fd_pca", "precision", "recall", "fid", "kid", "containment",
                                       "drift_psnr", "haze"}


def test_largest_component_and_floater_free_occupancy():
    grid = np.zeros((6, 6, 6), bool)
    grid[0:3, 0:3, 0:3] = True
    grid[5, 5, 5] = True
    grid[3, 3, 3] = True  # touches the cube at a corner: 26-connected
    kept = largest_component(grid)
    assert kept.sum() == 28 and not kept[5, 5, 5]
    assert not largest_component(np.zeros((2, 2, 2), bool)).any()

    def field(points, viewdirs):  # a big ball at the centre and a small one in a corner
        big = (points.norm(dim=-1, keepdim=True) < 0.5)
        small = ((points - 0.85).norm(dim=-1, keepdim=True) < 0.1)
        return None, torch.where(big | small, 5.0, -20.0)

    both = build_occupancy(field, 16, 1.0, dilation=0)
    body = build_occupancy(field, 16, 1.0, dilation=0, largest=True)
    assert both[0, 15, 15, 15] and not body[0, 15, 15, 15]
    assert torch.equal(body[0, :12, :12, :12], both[0, :12, :12, :12])


@pytest.fixture(autouse=True)
def small_inception_input(monkeypatch):
    """The network at 75 x 75 (its smallest input) instead of FID's 299: the same layers, 16x faster."""
    monkeypatch.setattr("humanliff.evaluation.inception.INPUT_SIZE", 75)


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    torch.manual_seed(0)
    net = FIDInception()
    for m in net.modules():  # random but non-degenerate statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 1.5)
            m.running_mean.normal_(0, 0.1)
    path = tmp_path_factory.mktemp("inception") / "pt_inception.pth"
    torch.save(net.state_dict(), path)
    return path


def test_inception_network_loads_its_weights_and_fid_of_a_set_with_itself_is_zero(inception_file):
    net = load_inception(inception_file)
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3) and shapes["fc.weight"] == (1008, 2048)
    assert shapes["Mixed_6e.branch7x7dbl_5.conv.weight"] == (192, 192, 1, 7)
    assert shapes["Mixed_7c.branch_pool.conv.weight"] == (192, 2048, 1, 1)
    images = RNG.uniform(size=(3, 24, 24, 3)).astype(np.float32)
    feats = inception_features(net, images, batch=2)
    assert feats.shape == (3, 2048) and np.isfinite(feats).all() and feats.std(0).max() > 0
    np.testing.assert_allclose(inception_features(net, (images * 255).round().astype(np.uint8)), feats, atol=0.05)
    assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-6)


def test_inception_file_that_is_not_the_network(inception_file, tmp_path):
    state = torch.load(inception_file)
    state.pop("Mixed_7c.branch_pool.conv.weight")
    torch.save(state, tmp_path / "other.pth")
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(InputFileError, match=r"other.pth: not the FID Inception network .*1 keys missing"):
        load_inception(tmp_path / "other.pth")
    with pytest.raises(InputFileError, match="text.pth: not a readable torch checkpoint"):
        load_inception(tmp_path / "text.pth")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_tiny_models(tmp_path_factory.mktemp("evalgen"))[1]


def _generation(folder, planes, layers=(0, 1, 2, 3)):
    folder.mkdir()
    np.savez(folder / "planes.npz", planes=planes.astype(np.float16), layers=np.asarray(layers),
             bounds=np.array([[-0.5, -1.0, -0.3], [0.5, 1.0, 0.3]], np.float32))
    return folder


EVAL = ["--config", "tiny", "--views", "2", "--size", "16", "--device", "cpu"]


def test_eval_gen_scores_a_generation_beside_the_ceiling(store, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    reference = np.asarray(open_store(store).planes, np.float32).transpose(1, 0, 2, 3, 4)  # [4, 2, C, R, R]
    noisy = np.clip(reference + 0.3 * RNG.normal(size=reference.shape), -1, 1)
    gen = _generation(tmp_path / "gen", np.concatenate([noisy, reference[:, :1]], axis=1)[:2], layers=(0, 1))
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["eval", "gen", str(gen), "--store", str(store), "--out", str(out), *EVAL])
    assert result.exit_code == 0, result.output
    assert "FID/KID skipped: no Inception weights at" in result.output and "pytorch-fid" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["humans"] == 3 and metrics["subjects"] == 2 and metrics["head_band"] == 0.75
    assert set(metrics["layers"]) == {"0", "1"}
    layer0, layer1 = metrics["layers"]["0"], metrics["layers"]["1"]
    assert set(layer0["generated"]) == {"fd_pca", "precision", "recall", "haze"}
    assert set(layer1["generated"]) == {"fd_pca", "precision", "recall", "containment", "drift_psnr", "haze"}
    ceiling = layer1["ceiling"]
    assert ceiling["fd_pca"] == pytest.approx(0.0, abs=1e-6) and ceiling["precision"] == ceiling["recall"] == 1.0
    assert layer1["generated"]["fd_pca"] > 0.0
    assert all(0.0 <= layer1[s]["containment"] <= 1.0 and 0.0 <= layer1[s]["haze"] <= 1.0
               for s in ("generated", "ceiling"))
    per_human = metrics["per_human"]
    assert set(per_human["0"]) == {"haze"} and set(per_human["1"]) == {"containment", "drift_psnr", "haze"}
    for layer, values in per_human.items():
        for name, found in values.items():
            assert len(found) == 3
            assert np.mean(found) == pytest.approx(metrics["layers"][layer]["generated"][name])
    assert (out / "renders.png").is_file()


def test_eval_gen_with_inception_weights(store, tmp_path, inception_file):
    reference = np.asarray(open_store(store).planes, np.float32).transpose(1, 0, 2, 3, 4)[:1]
    gen = _generation(tmp_path / "gen", reference[:, ::-1], layers=(0,))
    result = evaluate_generation(gen, store, tmp_path / "eval", render_cfg=load_config("tiny").render,
                                 inception=inception_file, views=1, size=16, device="cpu", progress=False)
    row = result["layers"]["0"]
    assert result["fid"] == "computed"
    assert row["ceiling"]["fid"] == pytest.approx(0.0, abs=1e-6)  # the reference against itself
    assert row["generated"]["fid"] > 0.0 and np.isfinite(row["generated"]["kid"])


def test_eval_gen_bad_input(store, tmp_path, inception_file):
    runner = CliRunner()
    (tmp_path / "empty").mkdir()
    small = _generation(tmp_path / "small", np.zeros((1, 2, 27, 8, 8)), layers=(0,))
    bad_net = tmp_path / "net.pth"
    torch.save({"fc.weight": torch.zeros(3)}, bad_net)
    good = _generation(tmp_path / "good", np.zeros((1, 2, 27, 16, 16)), layers=(0,))
    cases = [
        (["eval", "gen", str(tmp_path / "empty")], f"error: {tmp_path / 'empty' / 'planes.npz'}: no planes"),
        (["eval", "gen", str(small)], f"error: {store}: tri-planes are 27x16^2 but the generation"),
        (["eval", "gen", str(good), "--inception", str(bad_net)], f"error: {bad_net}: not the FID Inception"),
    ]
    for args, message in cases:
        result = runner.invoke(app, [*args, "--store", str(store), "--out", str(tmp_path / "o"), *EVAL])
        assert result.exit_code == 1, result.output
        assert result.output.strip().splitlines()[-1].startswith(message), result.output


def test_quality_benchmark_table():
    from benchmarks.quality import ROWS, markdown

    layer = {"generated": {"haze": 0.2, "containment": 0.9}, "ceiling": {"haze": 0.1, "containment": 1.0}}
    first = {"generated": {"haze": 0.4}, "ceiling": {"haze": 0.3}}
    table = markdown({"dpmpp_sde_20 fp32": {"layers": {"0": first, "1": layer}, "timings": {"generate_s": 12.3}}}, 8)
    lines = table.splitlines()
    assert lines[0].startswith("| row | fd_pca | precision | recall | fid | kid | containment | drift_psnr | haze |")
    assert lines[2] == "| dpmpp_sde_20 fp32 | - | - | - | - | - | 0.9 | - | 0.3 | 12 |"
    assert lines[3] == "| ceiling (reference store) | - | - | - | - | - | 1 | - | 0.2 | - |"
    names = [r.name for r in ROWS]
    assert {"ddpm_250", "ddim_50_eta1", "dpmpp_20", "dpmpp_sde_20", "dpmpp_sde_10"} <= set(names)
    assert all(r.planes_of in names for r in ROWS if r.planes_of)


def test_quality_benchmark_pairs_each_row_with_the_row_it_extends():
    from benchmarks.quality import markdown, paired_differences

    def result(haze0, haze1, drift1):
        per_human = {"0": {"haze": haze0}, "1": {"haze": haze1, "drift_psnr": drift1}}
        return {"layers": {"0": {"generated": {}, "ceiling": {}}}, "per_human": per_human,
                "timings": {"generate_s": None}}

    base = result([0.1, 0.2, 0.3], [0.3, 0.2, None], [20.0, 22.0, 30.0])
    head = result([0.1, 0.2, 0.3], [0.5, 0.1, 0.4], [25.0, 28.0, 31.0])
    diffs = paired_differences(head, base)
    # each human's haze is its mean over the layers (human 2 of base has layer 0 only): 0.1, -0.05, 0.05
    assert diffs["haze"][0] == pytest.approx(0.1 / 3)
    assert diffs["haze"][1] == pytest.approx(np.std([0.1, -0.05, 0.05], ddof=1) / np.sqrt(3))
    assert diffs["drift_psnr"] == pytest.approx((4.0, np.std([5.0, 6.0, 1.0], ddof=1) / np.sqrt(3)))
    assert "containment" not in diffs
    lines = markdown({"dpmpp_sde_10 fp32": base, "dpmpp_sde_10+head fp32": head}, 3).splitlines()
    assert lines[-1] == ("| dpmpp_sde_10+head fp32 - dpmpp_sde_10 fp32 | - | +4 +- 1.5 | +0.03333 +- 0.044 |")
    assert "human by human" not in markdown({"dpmpp_sde_10+head fp32": head}, 3)
    chained = markdown({"a fp32": base, "a+head fp32": head, "a+head+sdedit_0.5 fp32": base, "a+head bf16": head}, 3)
    assert [line.split(" | ")[0] for line in chained.splitlines()[-2:]] == [
        "| a+head fp32 - a fp32", "| a+head+sdedit_0.5 fp32 - a+head fp32"]
