"""Turntable videos: GIF always (Pillow), MP4 when imageio-ffmpeg is installed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from humanliff.errors import HumanLiffError
from humanliff.io import atomic_path
from humanliff.outputs.images import to_uint8


def mp4_available() -> bool:
    """True when imageio can write MP4 (the ``imageio-ffmpeg`` package is installed)."""
    return importlib.util.find_spec("imageio_ffmpeg") is not None


def write_video(path: str | Path, frames: np.ndarray, fps: float = 20.0) -> Path:
    """Write ``frames`` ``[F, H, W, 3]`` (uint8, or float in [0, 1]) as a looping GIF or an MP4, by suffix.

    A GIF also takes RGBA frames ``[F, H, W, 4]`` (its transparency is on or off per pixel). Frames are
    written atomically. MP4 needs ``imageio-ffmpeg`` (``pip install imageio-ffmpeg``).
    """
    path = Path(path)
    frames = to_uint8(frames)
    suffix = path.suffix.lower()
    channels = (3, 4) if suffix == ".gif" else (3,)
    if frames.ndim != 4 or frames.shape[-1] not in channels or len(frames) == 0:
        raise HumanLiffError(f"{path}: expected frames [F, H, W, {' or '.join(map(str, channels))}] with F > 0, "
                             f"got {frames.shape}")
    if suffix == ".gif":
        import imageio.v3 as imageio  # only when a GIF is written

        with atomic_path(path) as tmp:
            imageio.imwrite(tmp, frames, extension=".gif", duration=1000.0 / fps, loop=0)
    elif suffix == ".mp4":
        if not mp4_available():
            raise HumanLiffError(f"{path}: writing MP4 needs imageio-ffmpeg (pip install imageio-ffmpeg)")
        import imageio_ffmpeg

        with atomic_path(path) as tmp:
            writer = imageio_ffmpeg.write_frames(str(tmp), (frames.shape[2], frames.shape[1]), fps=fps,
                                                 macro_block_size=2, output_params=["-f", "mp4"])
            writer.send(None)
            for frame in frames:
                writer.send(np.ascontiguousarray(frame))
            writer.close()
    else:
        raise HumanLiffError(f"{path}: unknown video type '{suffix}' (use .gif or .mp4)")
    return path
