"""The README's "From Python" snippets, run as written (tiny sizes set through config overrides)."""

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import humanliff
from humanliff.config import load_config
from humanliff.data.synth import synthesize_from_config

README = Path(__file__).resolve().parent.parent / "README.md"
TINY = ["sample.image_size=16", "sample.turntable_frames=3", "sample.mesh_resolution=24", "sample.views=2",
        "render.n_samples=4", "render.n_importance=4", "render.occupancy_resolution=0", "sample.mesh_level=5"]
"""Small outputs for the default model (16 px pictures, a 24^3 mesh grid, 4 + 4 samples a ray)."""


def snippets() -> list[str]:
    """The ```python blocks of the README's "From Python" section, in order."""
    text = README.read_text()
    section = text[text.index("## From Python"):]
    section = section[:section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_generation_snippet_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    load = humanliff.Pipeline.from_pretrained.__func__
    call = humanliff.Pipeline.__call__

    def tiny_load(cls, *args, **kwargs):
        return load(cls, *args, overrides=TINY, **kwargs)

    def few_steps(self, *args, **kwargs):
        return call(self, *args, **{**kwargs, "steps": 2})

    monkeypatch.setattr(humanliff.Pipeline, "from_pretrained", classmethod(tiny_load))
    monkeypatch.setattr(humanliff.Pipeline, "__call__", few_steps)
    scope: dict = {}
    exec(snippets()[0], scope)  # noqa: S102 - the README's own code
    assert scope["result"].planes.shape == (4, 2, 27, 64, 64)
    assert Image.open("human0.png").size == (16, 16)
    assert scope["views"].shape == (2, 8, 16, 16, 3) and scope["views"].dtype == np.uint8
    with Image.open("human0.gif") as gif:
        assert gif.n_frames == 3 and gif.size == (4 * 16, 16)
        assert abs(gif.info["duration"] - 1000) <= 10  # 3 frames in 3 s
    assert Path("human0.glb").stat().st_size > 0 and Path("contact_sheet.png").is_file()
    assert sorted(p.name for p in Path("generated_py").glob("*.npz")) == ["planes.npz"]
    saved = np.load("generated_py/planes.npz")["planes"].astype(np.float32)
    np.testing.assert_allclose(saved, scope["result"].planes.numpy(), atol=2e-3)  # fp16 storage


@pytest.mark.parametrize("preset", ["tiny"])
def test_fit_and_train_snippet_runs_with_the_tiny_config(tmp_path, monkeypatch, preset):
    monkeypatch.chdir(tmp_path)
    synthesize_from_config(load_config(preset).synth, tmp_path / "data" / "synth")
    code = snippets()[1].replace('config="demo"', f'config="{preset}"')
    scope: dict = {"humanliff": humanliff}
    exec(code, scope)  # noqa: S102 - the README's own code
    assert scope["store_a"] == Path("runs/fit/store_a") and scope["store_b"] == Path("runs/fit/store_b")
    assert scope["ema"] == Path("runs/diffusion/ema.pt") and scope["ema"].is_file()
    assert scope["pipe"].models.resolution == load_config(preset).triplane.resolution
