"""progress.mp4: frames of the optimisation, written with imageio's ffmpeg plugin (H.264)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class VideoError(ValueError):
    """A video cannot be written here (one line: the reason and the fix)."""


def check_available() -> None:
    """Fail before any work when ``--save-video`` cannot work.

    Raises:
        VideoError: imageio or its ffmpeg plugin (``imageio-ffmpeg``) is not installed.
    """
    try:
        import imageio.v2  # noqa: F401
        import imageio_ffmpeg  # noqa: F401
    except ImportError as e:
        raise VideoError(f'--save-video: needs imageio with its ffmpeg plugin ({e}); '
                         'install it with: pip install imageio imageio-ffmpeg') from None


class VideoWriter:
    """Collect uint8 (H, W, 3) frames and encode them with ``write`` (atomically).

    Args:
        fps: frames per second (the projector uses 10).
    """

    def __init__(self, fps: int = 10):
        self.fps = fps
        self.frames: list[np.ndarray] = []

    def append(self, frame: np.ndarray) -> None:
        """Add one uint8 (H, W, 3) frame (all frames of one video have one size)."""
        self.frames.append(np.ascontiguousarray(frame, dtype=np.uint8))

    def write(self, path: str | Path) -> None:
        """Encode the frames into ``path`` (sides padded to even numbers, as yuv420p needs); none: no file."""
        if not self.frames:
            return
        import imageio.v2 as imageio
        path = Path(path)
        h, w = self.frames[0].shape[:2]
        ph, pw = h + h % 2, w + w % 2
        tmp = path.with_name(f'.{path.stem}.{os.getpid()}.tmp.mp4')
        try:
            with imageio.get_writer(tmp, format='FFMPEG', mode='I', fps=self.fps, codec='libx264',
                                    bitrate='16M', macro_block_size=1, ffmpeg_log_level='error') as wr:
                for f in self.frames:
                    wr.append_data(np.pad(f, ((0, ph - h), (0, pw - w), (0, 0))))
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()


def side_by_side(*imgs: np.ndarray) -> np.ndarray:
    """uint8 (H, W_i, 3) images of one height -> one (H, sum W_i, 3) frame."""
    return np.concatenate(imgs, axis=1)
