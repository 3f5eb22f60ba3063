"""Reading dataset images and masks as the original does: resize by ``image_scaling`` (area averaging for
images, nearest for masks, like OpenCV's INTER_AREA / INTER_NEAREST), binarize masks, black background."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from humanliff.errors import InputFileError


def scaled_size(height: int, width: int, scaling: float) -> tuple[int, int]:
    """Image size after ``image_scaling`` (the original truncates: ``int(H * scaling)``)."""
    return int(height * scaling), int(width * scaling)


def scale_intrinsics(K: np.ndarray, scaling: float) -> np.ndarray:
    """``K [..., 3, 3]`` of images resized by ``scaling``: the first two rows scaled (as the original)."""
    K = np.array(K, dtype=np.float32)
    K[..., :2, :] *= scaling
    return K


def _open(path: Path, mode: str) -> np.ndarray:
    if not path.is_file():
        raise InputFileError(path, "missing")
    try:
        with Image.open(path) as img:
            img.load()
            return np.asarray(img.convert(mode))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputFileError(path, f"not a readable image ({exc.__class__.__name__}: {exc})") from exc


def read_image(path: str | Path, scaling: float = 1.0) -> np.ndarray:
    """RGB image as uint8 ``[H, W, 3]``, area-averaged to ``scaling`` times its size."""
    path = Path(path)
    rgb = _open(path, "RGB")
    height, width = scaled_size(rgb.shape[0], rgb.shape[1], scaling)
    if (height, width) == rgb.shape[:2]:
        return rgb
    if height < 1 or width < 1:
        raise InputFileError(path, f"image_scaling {scaling} leaves no pixels")
    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.BOX))


def read_mask(path: str | Path, scaling: float = 1.0) -> np.ndarray:
    """Mask as bool ``[H, W]`` (nonzero is foreground), nearest-resized to ``scaling`` times its size."""
    path = Path(path)
    mask = _open(path, "L") != 0
    height, width = scaled_size(mask.shape[0], mask.shape[1], scaling)
    if (height, width) == mask.shape:
        return mask
    if height < 1 or width < 1:
        raise InputFileError(path, f"image_scaling {scaling} leaves no pixels")
    rows = np.minimum((np.arange(height) * (mask.shape[0] / height)).astype(np.int64), mask.shape[0] - 1)
    cols = np.minimum((np.arange(width) * (mask.shape[1] / width)).astype(np.int64), mask.shape[1] - 1)
    return mask[rows[:, None], cols[None, :]]


def read_pair(image_path: str | Path, mask_path: str | Path,
              scaling: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """An image and its mask: uint8 ``[H, W, 3]`` zeroed outside the mask, bool ``[H, W]``."""
    image, mask = read_image(image_path, scaling), read_mask(mask_path, scaling)
    if image.shape[:2] != mask.shape:
        raise InputFileError(mask_path, f"mask is {mask.shape[1]}x{mask.shape[0]} but its image "
                                        f"{image_path} is {image.shape[1]}x{image.shape[0]}")
    return np.where(mask[..., None], image, 0).astype(np.uint8), mask
