"""anny's cache: the numpy target parsers read what anny's parsers read, bad target lines are named errors, and a
build keeps only the compact model file (the build itself is faked; the anny dataset tests run the real one)."""

import gzip
from pathlib import Path

import pytest
import torch

from humanliff.data import anny_cache
from humanliff.data.anny_cache import build_cached, parse_plain_target, parse_target


class _Scale:
    """A stand-in for anny's roma transform (``apply``)."""

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return 0.1 * x


def _gz(path: Path, text: str) -> Path:
    with gzip.open(path, "wt") as f:
        f.write(text)
    return path


def test_targets_parse_to_offsets_per_vertex(tmp_path):
    path = _gz(tmp_path / "t.target.gz", "0 1 2 3\n3 -.5 10.25 0\n")
    got = parse_target(path, 5, _Scale(), torch.float64)
    want = torch.zeros(5, 3, dtype=torch.float64)
    want[0], want[3] = torch.tensor([0.1, 0.2, 0.3]).double(), torch.tensor([-0.05, 1.025, 0.0]).double()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-7)
    plain = tmp_path / "t.target"
    plain.write_text("# a face unit\n\n1 1 1 1\n")
    assert parse_plain_target(plain, 2, _Scale(), torch.float64)[1].tolist() == pytest.approx([0.1] * 3)


@pytest.mark.parametrize("text", ["0 1 2\n", "5 0 0 0\n", "-1 0 0 0\n", "1.5 0 0 0\n"])
def test_bad_target_lines_name_the_file(tmp_path, text):
    path = _gz(tmp_path / "bad.target.gz", text)
    with pytest.raises(ValueError, match="bad.target.gz"):
        parse_target(path, 5, _Scale(), torch.float64)


def test_numpy_parsers_read_anny_targets_exactly_as_anny():
    pytest.importorskip("anny")
    import roma
    from anny.models import facial_actions, full_model
    from anny.paths import get_anny_root_dir

    world = roma.Linear(0.1 * roma.euler_to_rotmat("X", [90], degrees=True, dtype=torch.float64))[None]
    targets = get_anny_root_dir() / "data" / "mpfb2" / "targets"
    for path in (targets / "macrodetails" / "universal-female-young-averagemuscle-averageweight.target.gz",
                 targets / "breast" / "female-child-averagemuscle-averageweight-maxcup-averagefirmness.target.gz",
                 next((targets / "arms").glob("*.target.gz"))):
        assert torch.equal(parse_target(path, 19158, world, torch.float64),
                           full_model.load_blend_shape(path, 19158, world, torch.float64)), path
    unit = get_anny_root_dir() / "data" / "faceunits01" / "targets" / "faceunits" / "jawOpen.target"
    assert torch.equal(parse_plain_target(unit, 19158, world, torch.float64),
                       facial_actions.load_plain_target(unit, 19158, world, torch.float64))


def test_a_build_keeps_only_the_compact_file_and_the_next_use_loads_it(tmp_path):
    pytest.importorskip("anny")
    import anny.paths
    from anny.models import full_model
    from anny.models.model_data import CURRENT_DATA_VERSION

    seen = []

    def construct():
        folder = anny.paths.get_anny_cache_path() / f"v{CURRENT_DATA_VERSION}"
        seen.append((folder.parent, full_model.load_blend_shape))
        if not any(folder.glob("build_compact_model_data_*")):
            folder.mkdir(parents=True, exist_ok=True)
            for name in ("load_data_1", "build_model_data_2", "build_compact_model_data_3"):
                (folder / f"{name}.safetensors").write_bytes(name.encode())
        return "model"

    root = tmp_path / "cache"
    assert build_cached(construct, root) == "model"
    assert seen[0][0].parent == root and seen[0][0].name.startswith(".staging-")  # built aside
    assert seen[0][1] is anny_cache.parse_target and full_model.load_blend_shape is not anny_cache.parse_target
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == [
        f"v{CURRENT_DATA_VERSION}", f"v{CURRENT_DATA_VERSION}/build_compact_model_data_3.safetensors"]
    assert build_cached(construct, root) == "model"
    assert seen[1] == (root, full_model.load_blend_shape)  # read in place, nothing built
    assert anny.paths.get_anny_cache_path() == root


def test_a_failed_build_leaves_nothing(tmp_path):
    pytest.importorskip("anny")
    import anny.paths

    def construct():
        (anny.paths.get_anny_cache_path() / "v1").mkdir()
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        build_cached(construct, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == [] and anny.paths.get_anny_cache_path() == tmp_path / "cache"
