"""progress.mp4: frames of the optimisation, written with imageio's ffmpeg plugin (H.264)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class VideoWriter:
    """Collect uint8 (H, W, 3) frames and encode them on ``close`` into ``path`` (atomically).

    Args:
        path: the ``.mp4`` to write.
        fps: frames per second (the projector uses 10).
    """

    def __init__(self, path: str | Path, fps: int = 10):
        self.path, self.fps = Path(path), fps
        self.frames: list[np.ndarray] = []

    def append(self, frame: np.ndarray) -> None:
        self.frames.append(np.ascontiguousarray(frame, dtype=np.uint8))

    def close(self) -> None:
        """Encode the frames (sides padded to even numbers, as yuv420p needs)."""
        if not self.frames:
            return
        import imageio.v2 as imageio
        h, w = self.frames[0].shape[:2]
        ph, pw = h + h % 2, w + w % 2
        tmp = self.path.with_name(f'.{self.path.stem}.{os.getpid()}.tmp.mp4')
        try:
            with imageio.get_writer(tmp, format='FFMPEG', mode='I', fps=self.fps, codec='libx264',
                                    bitrate='16M', macro_block_size=1, ffmpeg_log_level='error') as wr:
                for f in self.frames:
                    wr.append_data(np.pad(f, ((0, ph - h), (0, pw - w), (0, 0))))
            os.replace(tmp, self.path)
        finally:
            if tmp.exists():
                tmp.unlink()


def side_by_side(*imgs: np.ndarray) -> np.ndarray:
    """uint8 (H, W_i, 3) images of one height -> one (H, sum W_i, 3) frame."""
    return np.concatenate(imgs, axis=1)
