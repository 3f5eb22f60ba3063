"""TightCap: layer synthesis from the garment masks (§1.1) and the loader on a small hand-made subject."""

import json

import numpy as np
from PIL import Image

from humanliff.config import DataConfig
from humanliff.data.bounds import write_bounds
from humanliff.data.loader import load_dataset
from humanliff.data.tightcap import synthesize_layers

SKIN = [155, 126, 112]  # round(255 * (0.607186, 0.49289057, 0.43795943))


def masks_1x6():
    """Pixels: 0 body, 1 top over body, 2 top off body, 3 bottom + shoes off body, 4 shoes off body, 5 bg."""
    body = np.array([[1, 1, 0, 0, 0, 0]], bool)
    top = np.array([[0, 1, 1, 0, 0, 0]], bool)
    bottom = np.array([[0, 0, 0, 1, 0, 0]], bool)
    shoes = np.array([[0, 0, 0, 1, 1, 0]], bool)
    full = np.array([[1, 1, 1, 1, 1, 0]], bool)
    image = np.array(
        [[[10, 20, 30], [40, 50, 60], [70, 80, 90], [100, 110, 120], [130, 140, 150], [9, 9, 9]]], np.uint8
    )
    return image, full, body, {"top": top, "bottom": bottom, "shoes": shoes}


def test_layer_synthesis_follows_the_original():
    image, full, body, garments = masks_1x6()
    images, masks = synthesize_layers(image, full, body, garments)
    # layer 0 (top, bottom, shoes removed): top-over-body -> skin; garment-only pixels -> 0; bottom+shoes
    # overlap off the body sums to 2 -> skin (the original's quirk B18)
    assert images[0, 0].tolist() == [[10, 20, 30], SKIN, [0, 0, 0], SKIN, [0, 0, 0], [0, 0, 0]]
    assert masks[0, 0].tolist() == [True, True, False, True, False, False]
    # layer 1 (top, shoes removed): pixel 3 has shoes off the body, so it is zeroed (sum 1: no skin)
    assert images[1, 0].tolist() == [[10, 20, 30], SKIN, [0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]]
    # layer 2 (shoes removed): the top is back
    assert images[2, 0].tolist() == [
        [10, 20, 30],
        [40, 50, 60],
        [70, 80, 90],
        [0, 0, 0],
        [0, 0, 0],
        [0, 0, 0],
    ]
    # layer 3: the full image inside the full mask
    assert (
        images[3, 0].tolist() == [*image[0, :5].tolist(), [0, 0, 0]]
        and masks[3, 0].tolist() == full[0].tolist()
    )


def write_tightcap(root, views=2, size=6):
    root.mkdir()
    (root / "TightCap_human_list.txt").write_text("f_c_1\n")
    subject = root / "f_c_1"
    image, full, body, garments = masks_1x6()
    tile = lambda a: np.repeat(a, size, axis=0)  # noqa: E731
    cams = {}
    for v in range(views):
        for name, mask in {"person-top-bottom-shoes": full, "person": body, **garments}.items():
            (subject / name / "mask" / f"camera{v:04d}").mkdir(parents=True)
            Image.fromarray(tile(mask).astype(np.uint8) * 255).save(
                subject / name / "mask" / f"camera{v:04d}" / "0000.png"
            )
        (subject / "person-top-bottom-shoes" / "img" / f"camera{v:04d}").mkdir(parents=True)
        Image.fromarray(tile(image)).save(
            subject / "person-top-bottom-shoes" / "img" / f"camera{v:04d}" / "0000.png"
        )
        cams[f"camera{v:04d}"] = {"K": np.eye(3).tolist(), "R": np.eye(3).tolist(), "T": [[0], [0], [3 + v]]}
    for v in range(views):  # lossless stand-ins for the JPEGs, so pixel values can be compared exactly
        png = subject / "person-top-bottom-shoes" / "img" / f"camera{v:04d}" / "0000.png"
        png.rename(png.with_suffix(".jpg"))
    (subject / "person-top-bottom-shoes" / "cameras.json").write_text(json.dumps(cams))
    write_bounds(subject / "bounds.json", np.array([[-1, -1, -1], [1, 1, 1]], np.float32))
    return image, full, body, garments


def test_tightcap_loader_builds_the_four_layers(tmp_path):
    image, full, body, garments = write_tightcap(tmp_path / "tc")
    (subject,) = load_dataset(DataConfig(root=str(tmp_path / "tc"), layout="tightcap"), progress=False)
    expected, expected_masks = synthesize_layers(
        np.repeat(image, 6, 0),
        np.repeat(full, 6, 0),
        np.repeat(body, 6, 0),
        {k: np.repeat(m, 6, 0) for k, m in garments.items()},
    )
    assert subject.images.shape == (4, 2, 6, 6, 3) and subject.view_ids == [0, 1]
    np.testing.assert_array_equal(subject.images[:, 1], expected)
    np.testing.assert_array_equal(subject.masks[:, 0], expected_masks)
    assert subject.T[1].tolist() == [0, 0, 4] and subject.warp is None
