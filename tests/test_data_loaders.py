"""SynBody loading: image_scaling, every bad-input path (one line naming the file), data check, the CLI."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from humanliff.cli import app
from humanliff.config import DataConfig
from humanliff.data.check import check_dataset
from humanliff.data.images import read_mask
from humanliff.data.loader import LAYOUTS, get_layout, load_dataset, subject_list_path
from humanliff.data.synth import synthesize_dataset
from humanliff.errors import HumanLiffError, InputFileError

SUBJECT = "seq_000000"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return synthesize_dataset(
        tmp_path_factory.mktemp("src") / "ds", subjects=2, views=3, resolution=16, seed=0, workers=1
    )


@pytest.fixture
def ds(source, tmp_path):
    return shutil.copytree(source, tmp_path / "ds")


def load(ds, **kw):
    return load_dataset(DataConfig(root=str(ds), **kw), progress=False)


def test_nearest_mask_resize_matches_opencv_indexing(tmp_path):
    mask = np.zeros((4, 6), np.uint8)
    mask[1, 2] = mask[3, 5] = 7
    Image.fromarray(mask).save(tmp_path / "m.png")
    # INTER_NEAREST at 0.5 keeps source rows/cols 0, 2 (floor(dst * 2))
    assert read_mask(tmp_path / "m.png", 0.5).tolist() == [[False, False, False], [False, False, False]]
    assert read_mask(tmp_path / "m.png").sum() == 2


BREAKAGES = {
    "missing cameras.json": (lambda d: (d / SUBJECT / "cameras.json").unlink(), "cameras.json: missing"),
    "missing camera entry": (
        lambda d: (d / SUBJECT / "cameras.json").write_text(
            json.dumps(
                {
                    k: v
                    for k, v in json.loads((d / SUBJECT / "cameras.json").read_text()).items()
                    if k != "camera0001"
                }
            )
        ),
        "cameras.json: no entry for camera0001",
    ),
    "corrupt jpeg": (
        lambda d: (d / SUBJECT / "person-pants" / "img" / "camera0002" / "0000.jpg").write_bytes(
            b"\xff\xd8 not a jpeg"
        ),
        "person-pants/img/camera0002/0000.jpg: not a readable image",
    ),
    "corrupt png": (
        lambda d: (d / SUBJECT / "person" / "mask" / "camera0000" / "0000.png").write_bytes(
            b"\x89PNG\r\n\x1a\n garbage"
        ),
        "person/mask/camera0000/0000.png: not a readable image",
    ),
    "size mismatch": (
        lambda d: Image.new("L", (8, 8)).save(d / SUBJECT / "person" / "mask" / "camera0001" / "0000.png"),
        "mask is 8x8 but its image",
    ),
    "empty subject list": (
        lambda d: (d / "human_list.txt").write_text("\n"),
        "human_list.txt: lists no subjects",
    ),
    "unknown layer folder": (
        lambda d: (d / SUBJECT / "person-hat").mkdir(),
        "person-hat: unknown layer folder",
    ),
    "missing layer folder": (
        lambda d: shutil.rmtree(d / SUBJECT / "person-pants-shirt"),
        "person-pants-shirt: missing layer folder",
    ),
    "bad bounds": (
        lambda d: (d / SUBJECT / "bounds.json").write_text("{}"),
        "bounds.json: not a bounds file",
    ),
}


@pytest.mark.parametrize("case", sorted(BREAKAGES))
def test_bad_input_raises_one_line_naming_the_file(ds, case):
    breakage, message = BREAKAGES[case]
    breakage(ds)
    with pytest.raises(InputFileError) as info:
        load(ds)
    assert message in str(info.value) and "\n" not in str(info.value)
    result = CliRunner().invoke(app, ["data", "check", str(ds)])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


def test_check_lists_every_problem_at_once(ds):
    for case in ("missing camera entry", "corrupt jpeg", "corrupt png", "unknown layer folder"):
        BREAKAGES[case][0](ds)
    (ds / "seq_000001" / "bounds.json").unlink()
    problems, n = check_dataset(DataConfig(root=str(ds)), progress=False)
    assert n == 2 and len(problems) == 5
    assert any("seq_000001/bounds.json: missing" in p for p in problems)
    result = CliRunner().invoke(app, ["data", "check", str(ds)])
    assert result.exit_code == 1 and result.output.count("problem: ") == 5


def test_cli_synth_check_preview(tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli_ds"
    result = runner.invoke(
        app, ["data", "synth", "--config", "tiny", "--out", str(out), "--subjects", "1", "--views", "2"]
    )
    assert result.exit_code == 0, result.output
    assert len(list((out / SUBJECT / "person" / "img").iterdir())) == 2
    assert Image.open(out / SUBJECT / "person" / "img" / "camera0000" / "0000.jpg").size == (32, 32)
    result = runner.invoke(app, ["data", "check", str(out)])
    assert result.exit_code == 0 and "ok:" in result.output
    sheet = tmp_path / "sheet.png"
    result = runner.invoke(
        app, ["data", "preview", str(out), "--out", str(sheet), "--views", "2", "--tile", "20"]
    )
    assert result.exit_code == 0, result.output
    assert Image.open(sheet).size == (4 * 2 * 20, 14 + 20)
    result = runner.invoke(app, ["data", "check", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and "human_list.txt: missing" in result.output


def test_layout_registry_and_the_choices_that_copy_it(tmp_path):
    from humanliff.cli import LAYOUT_NAMES
    from humanliff.config import LIMITS

    assert LAYOUT_NAMES == LIMITS["data"]["layout"].choices == tuple(LAYOUTS)
    assert subject_list_path(tmp_path, "tightcap") == tmp_path / "human_list.txt"  # neither exists: the first
    (tmp_path / "TightCap_human_list.txt").write_text("a\n")
    assert subject_list_path(tmp_path, "tightcap") == tmp_path / "TightCap_human_list.txt"
    assert subject_list_path(tmp_path, "synbody") == tmp_path / "human_list.txt"
    assert get_layout("synbody").mask_file(tmp_path, 1, 7) == tmp_path / "person-pants/mask/camera0007/0000.png"
    with pytest.raises(HumanLiffError, match="unknown layout 'nope' \\(valid: synbody, tightcap\\)"):
        get_layout("nope")
