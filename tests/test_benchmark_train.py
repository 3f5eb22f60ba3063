"""The benchmark's ``train`` section end to end at tiny size on the CPU, and its loss-curve comparison."""

import json

import numpy as np
import pytest
import torch

from benchmarks.run import main
from benchmarks.train_speed import compare_curves


def test_compare_curves_measures_the_difference_in_standard_errors():
    rng = np.random.default_rng(0)
    a = 1.0 + 0.1 * rng.standard_normal(400)
    same = compare_curves(a, a.copy())
    assert same["window"] == 100 and same["max_z"] < 1e-6 and same["max_abs_diff"] == 0.0
    shifted = compare_curves(a, a + 0.05)  # 0.05 = 3.5 standard errors of a 100-step mean (0.1 * sqrt(2 / 100))
    assert shifted["max_z"] == pytest.approx(0.05 / np.mean(shifted["standard_error"]), rel=0.2)
    assert 2.5 < shifted["max_z"] < 5.0
    assert len(compare_curves(a[:20], a[:20])["before"]) == 4  # short curves: windows of a quarter


@pytest.fixture
def one_thread():
    """Tiny tensors on a shared 2-core machine: one thread, so that OpenMP does not spin against other work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_train_section_end_to_end_on_the_cpu(tmp_path, monkeypatch, one_thread):
    monkeypatch.delenv("OUT", raising=False)
    main(["--sections", "train", "--out", str(tmp_path)])
    (result,) = tmp_path.glob("*-cpu.json")
    payload = json.loads(result.read_text())
    assert not payload["errors"], payload["errors"]
    rows = {r["name"]: r for r in payload["rows"]}
    before = rows["current trainer (train.cuda_graph=false), whole UNet compiled, microbatch 2"]
    assert before["unit"] == "samples/s" and before["value"] > 0
    new = [r for r in payload["rows"] if r["name"].startswith("new step")]
    assert len(new) == 2 and all(r["baseline"] == before["value"] and r["value"] > 0 for r in new)
    phases = [r for r in payload["rows"] if r["name"].startswith("current trainer's step, ")]
    assert len(phases) == 4 and all(r["unit"] == "ms" and r["value"] > 0 for r in phases)
    curves = [r for r in payload["rows"] if r["name"].startswith("loss curve")]
    assert len(curves) == 3
    # on the CPU both trainers run the same eager step: the curves are identical
    assert curves[2]["value"] == 0.0 and curves[0]["value"] == curves[1]["value"]
    (curve_file,) = tmp_path.glob("*-train-curve-*.json")
    curve = json.loads(curve_file.read_text())
    assert curve["steps"] == 4 and len(curve["per_step_before"]) == 4
    assert curve["per_step_before"] == curve["per_step_after"] and 0.05 < np.mean(curve["per_step_before"]) < 2
    assert payload["meta"]["train_skipped"] == "none"


def test_written_out_group_norm_matches_and_keeps_channels_last():
    """``benchmarks.train_profile``'s GroupNorm candidate: ``F.group_norm``'s values, channels_last kept on meta
    tensors (``F.group_norm``'s meta output is NCHW), eager and compiled."""
    from benchmarks.train_profile import ChannelsLastGroupNorm, group_norm_fp32

    x = (torch.randn(2, 64, 8, 8) * 3 + 1).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(64), torch.randn(64)
    reference = torch.nn.functional.group_norm(x, 32, weight, bias, 1e-5)
    assert (group_norm_fp32(x, 32, weight, bias, 1e-5) - reference).abs().max() < 1e-5
    meta = [t.to("meta") for t in (x, weight, bias)]
    assert group_norm_fp32(meta[0], 32, meta[1], meta[2], 1e-5).is_contiguous(memory_format=torch.channels_last)
    assert not torch.nn.functional.group_norm(*meta[:1], 32, *meta[1:], 1e-5).is_contiguous(
        memory_format=torch.channels_last)
    norm = ChannelsLastGroupNorm(32, 64)
    with torch.no_grad():
        norm.weight.copy_(weight)
        norm.bias.copy_(bias)
        assert (norm(x) - reference).abs().max() < 1e-5
        assert (torch.compile(norm)(x) - reference).abs().max() < 1e-4
