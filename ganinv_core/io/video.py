"""Videos through imageio's ffmpeg plugin: progress.mp4 and restored videos written (H.264), video targets read."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np

from .._errors import exc_line


class VideoError(ValueError):
    """A video cannot be written here (one line: the reason and the fix)."""


#: File extensions read as videos (every frame a target, restored in order; ``ganinv-run --target clip.mp4``).
VIDEO_EXTENSIONS = ('.mp4', '.m4v', '.mov', '.avi', '.mkv', '.webm')
MAX_FRAMES = 10_000


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def read_frames(path: str | Path, max_frames: int = MAX_FRAMES, max_pixels: int | None = None
                ) -> tuple[list[np.ndarray], float]:
    """Every frame of a video as uint8 (H, W, 3), and its frame rate.

    Raises:
        ImageError: unreadable, no frame, frames over ``max_pixels`` (default ``images.MAX_PIXELS``), or more than
            ``max_frames`` frames (named, with the count).
    """
    from .images import MAX_PIXELS, ImageError
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    try:
        import imageio.v2 as imageio
        reader = imageio.get_reader(str(path), format='FFMPEG')
    except (ImportError, OSError, RuntimeError, ValueError) as e:
        raise ImageError(f'{path}: cannot read the video ({exc_line(e, 200)})') from None
    frames: list[np.ndarray] = []
    try:
        meta = reader.get_meta_data()
        fps = float(meta.get('fps') or 25.0)
        w, h = meta.get('size') or (0, 0)
        if w * h > limit:
            raise ImageError(f'{path}: {w}x{h} frames are over the {limit:,}-pixel limit')
        for frame in reader:
            if len(frames) == max_frames:
                raise ImageError(f'{path}: more than {max_frames} frames; cut it into parts (ffmpeg -ss/-t)')
            frames.append(np.ascontiguousarray(np.asarray(frame)[..., :3], dtype=np.uint8))
    except (OSError, RuntimeError, IndexError) as e:
        raise ImageError(f'{path}: cannot read frame {len(frames)} ({exc_line(e, 200)})') from None
    finally:
        reader.close()
    if not frames:
        raise ImageError(f'{path}: the video has no frame')
    return frames, fps


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
    """Encode uint8 (H, W, 3) frames as they come into a hidden temporary file in ``folder``; ``write`` moves the
    finished video into place and ``close`` drops an unfinished one. No frame is kept in memory (a 1024² run holds
    one frame, not the hundreds of megabytes of all of them).

    Args:
        folder: where the temporary file goes (on the file system of the final path: the move is a rename).
        fps: frames per second (the projector uses 10).
    """

    def __init__(self, folder: str | Path, fps: int = 10):
        self.folder, self.fps = Path(folder), fps
        self.count, self._writer, self._tmp, self._size = 0, None, None, None

    def append(self, frame: np.ndarray) -> None:
        """Encode one uint8 (H, W, 3) frame; every frame of a video has the first one's size (sides padded to even
        numbers, as yuv420p needs)."""
        frame = np.ascontiguousarray(frame, dtype=np.uint8)
        if self._writer is None:
            import imageio.v2 as imageio
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix='.progress-', suffix='.tmp.mp4')
            os.close(fd)
            self._tmp, self._size = Path(tmp), frame.shape[:2]
            self._writer = imageio.get_writer(tmp, format='FFMPEG', mode='I', fps=self.fps, codec='libx264',
                                              bitrate='16M', macro_block_size=1, ffmpeg_log_level='error')
        if frame.shape[:2] != self._size:
            raise ValueError(f'video: frame {frame.shape[:2]} differs from the first one {self._size}')
        h, w = self._size
        self._writer.append_data(np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0))))
        self.count += 1

    def write(self, path: str | Path) -> None:
        """Finish the video and move it to ``path`` (no frames: no file)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            os.replace(self._tmp, path)
            self._tmp = None

    def close(self) -> None:
        """Drop an unfinished video and its temporary file (after ``write``: nothing to do)."""
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
            self._writer = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None


def side_by_side(*imgs: np.ndarray) -> np.ndarray:
    """uint8 (H, W_i, 3) images of one height -> one (H, sum W_i, 3) frame."""
    return np.concatenate(imgs, axis=1)
