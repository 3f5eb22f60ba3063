"""``data synth --reuse`` (synth.json and a full read) and the synthetic images' lossless smallest encoding."""

import io
import json
import shutil

import numpy as np
from click.testing import CliRunner
from PIL import Image

from humanliff.cli import app
from humanliff.data.synth import synthesize_dataset

SYNTH = ["data", "synth", "--config", "tiny", "--subjects", "1", "--views", "2"]
JPG = "seq_000000/person-pants/img/camera0001/0000.jpg"


def _synth(out, *extra):
    return CliRunner().invoke(app, [*SYNTH, "--out", str(out), *extra])


def test_reuse_keeps_the_same_dataset_and_synthesizes_an_absent_one(tmp_path):
    out = tmp_path / "ds"
    result = _synth(out, "--reuse")
    assert result.exit_code == 0 and "wrote" in result.output, result.output
    record = json.loads((out / "synth.json").read_text())
    assert record == {"bodies": "primitives", "resolution": 32, "seed": 0, "subjects": 1, "views": 2}
    written = (out / JPG).stat().st_mtime_ns
    result = _synth(out, "--reuse")
    assert result.exit_code == 0 and "kept" in result.output, result.output
    assert (out / JPG).stat().st_mtime_ns == written
    assert _synth(out).exit_code == 1  # without --reuse an existing dataset still needs --force


def test_reuse_refuses_other_settings_partial_or_foreign_data_and_force_replaces(tmp_path):
    out = tmp_path / "ds"
    assert _synth(out).exit_code == 0
    result = _synth(out, "--reuse", "--views", "3")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"error: --reuse: {out / 'synth.json'}: written with other settings: views 2 (wanted 3); remove it, "
        "or add --force to replace it"]
    for kind in ("img", "mask"):  # a copy that lost one view of every layer
        for layer in out.glob("seq_000000/person*"):
            shutil.rmtree(layer / kind / "camera0001")
    result = _synth(out, "--reuse")
    assert result.exit_code == 1 and "1 views of 32x32 px (wanted 2 of 32x32)" in result.output
    result = _synth(out, "--reuse", "--force")
    assert result.exit_code == 0 and "wrote" in result.output and (out / JPG).is_file()
    (out / JPG).write_bytes(b"not a jpeg")
    result = _synth(out, "--reuse")
    assert result.exit_code == 1 and JPG in result.output
    (out / "synth.json").unlink()
    result = _synth(out, "--reuse")
    assert result.exit_code == 1 and "synth.json: missing or unreadable" in result.output


def test_images_are_the_plain_encoders_pixels_in_fewer_bytes(tmp_path, monkeypatch):
    written = []
    save = Image.Image.save

    def recording_save(image, path, *args, **kwargs):
        save(image, path, *args, **kwargs)
        written.append((np.asarray(image).copy(), path.read_bytes(), kwargs))

    monkeypatch.setattr(Image.Image, "save", recording_save)
    synthesize_dataset(tmp_path / "ds", subjects=1, views=2, resolution=32, seed=0, workers=1)
    monkeypatch.setattr(Image.Image, "save", save)
    assert len(written) == 2 * 4 * 2
    ours = plain_total = 0
    for pixels, data, kwargs in written:
        plain = io.BytesIO()
        fmt = Image.open(io.BytesIO(data)).format
        Image.fromarray(pixels).save(plain, format=fmt, quality=kwargs.get("quality", 75))
        assert kwargs["optimize"] is True
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), np.asarray(Image.open(plain)))
        ours, plain_total = ours + len(data), plain_total + len(plain.getvalue())
    assert ours < 0.95 * plain_total  # a tiny mask can come out a byte longer; the whole is smaller
