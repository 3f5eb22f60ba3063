"""viewer.html: a self-contained page (no network) with every human's turntable per layer, in a real browser."""

import base64
import io
import json
import re

import numpy as np
import pytest
from PIL import Image
from viewer_data import tiny_generation

from humanliff.errors import HumanLiffError
from humanliff.viewer.html import viewer_html


def _turntables(humans, layers, frames, size):
    """``[L, F, S, S, 3]`` per human: a bar whose position follows the frame, its colour the layer."""
    out = np.zeros((humans, layers, frames, size, size, 3), np.uint8)
    for h in range(humans):
        for k in range(layers):
            for f in range(frames):
                x = f * size // frames
                out[h, k, f, :, x:x + size // 4] = (60 * k + 40, 200 - 40 * h, 100)
    return list(out)


def _page_data(page):
    return json.loads(re.search(r'id="humanliff-data">(.*?)</script>', page, re.S).group(1))


def test_page_is_self_contained_and_scales_frames():
    page = viewer_html(_turntables(2, 3, 6, 300), ["body", "+pants", "+shirt"], max_size=100)
    assert "http://" not in page and "https://" not in page and "<script src" not in page and "<link" not in page
    data = _page_data(page)
    assert data["titles"] == ["body", "+pants", "+shirt"] and data["names"] == ["human 0", "human 1"]
    assert data["frames"] == 6 and data["size"] == 100 and len(data["humans"]) == 2
    uri = data["humans"][1][2]
    assert uri.startswith("data:image/jpeg;base64,")
    strip = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert strip.size == (6 * 100, 100)


def test_page_rejects_bad_input():
    with pytest.raises(HumanLiffError, match="no humans"):
        viewer_html([], ["body"])
    with pytest.raises(HumanLiffError, match=r"\[L, F, S, S, 3\]"):
        viewer_html([np.zeros((1, 2, 8, 8), np.uint8)], ["body"])
    with pytest.raises(HumanLiffError, match="2 layer titles for 1 layers"):
        viewer_html(_turntables(1, 1, 2, 8), ["body", "+pants"])
    with pytest.raises(HumanLiffError, match="every human"):
        viewer_html([*_turntables(1, 1, 2, 8), *_turntables(1, 1, 3, 8)], ["body"])


@pytest.fixture(scope="module")
def generation(tmp_path_factory):
    return tiny_generation(tmp_path_factory.mktemp("gen") / "gen", humans=3)


def _canvas_pixels(page):
    return np.asarray(Image.open(io.BytesIO(page.locator("main").screenshot())).convert("RGB"), np.int16)


def test_viewer_html_in_chromium(browser, generation, tmp_path):
    page = browser.new_page(viewport={"width": 1000, "height": 640})
    problems, requests = [], []
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    url = generation["viewer"].resolve().as_uri()
    page.goto(url)
    page.wait_for_function("document.querySelectorAll('canvas').length === 3")
    page.wait_for_timeout(300)  # the sprites decode
    start = _canvas_pixels(page)
    page.screenshot(path=tmp_path / "start.png")
    assert start.std() > 10, "the humans are drawn"
    assert page.evaluate("document.body.dataset.layer") == "3"
    assert page.get_by_role("button", name="+shoes").get_attribute("aria-pressed") == "true"

    page.get_by_role("button", name="body").click()
    assert page.evaluate("document.body.dataset.layer") == "0"
    body = _canvas_pixels(page)
    assert np.abs(body - start).mean() > 1.0, "the layer button changes the picture"

    box = page.locator("canvas").first.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + 0.7 * box["width"], y)
    page.mouse.down()
    page.mouse.move(box["x"] + 0.3 * box["width"], y, steps=6)
    page.mouse.up()
    frame = int(page.evaluate("document.body.dataset.frame"))
    assert frame != 0
    turned = _canvas_pixels(page)
    assert np.abs(turned - body).mean() > 1.0, "dragging turns the humans"
    page.screenshot(path=tmp_path / "turned.png")
    page.keyboard.press("2")
    assert page.evaluate("document.body.dataset.layer") == "1"
    page.keyboard.press("ArrowRight")
    assert int(page.evaluate("document.body.dataset.frame")) == (frame + 1) % 8

    assert not problems, problems
    assert requests == [url], "nothing but the page itself is loaded"
    page.close()
