"""FFHQ face alignment in, restored face pasted back out.

    faces = align_faces(photo, 1024)                  # detect (dlib), FFHQ-align: list[AlignedFace]
    for face, restored in zip(faces, restored_crops):  # restored: uint8 (R, R, 3), any R
        photo = paste_back(photo, restored, face)     # inverse warp + feathered mask, photo resolution

Coordinates are pixel-centre `(x, y)` = (column, row): the centre of `img[r, c]` is `(c, r)`. Landmarks and
quads are in photo coordinates; `AlignedFace.transform` maps crop coordinates to photo coordinates,
`photo_xy1 = transform @ [i, j, 1]`. See docs/alignment.md.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image

from ._ffhq import crop_to_photo, ffhq_quad, warp_ffhq

__all__ = ['AlignError', 'AlignedFace', 'NoFaceError', 'align_face', 'align_faces', 'align_video',
           'align_video_faces', 'largest', 'paste_back', 'track', 'track_faces']

_MIN_QSIZE = 8.0  # pixels: a smaller crop square is a detector glitch, not a face


class AlignError(ValueError):
    """Bad input to alignment or paste-back (one line: which input, why)."""


class NoFaceError(AlignError):
    """The photo has no (usable) face, or not the one asked for."""


@dataclasses.dataclass
class AlignedFace:
    """One face of a photo, FFHQ-aligned.

    Attributes:
        index: position of the face in the photo's faces ordered left to right (by quad centre).
        landmarks: float64 (68, 2), dlib order, photo pixel-centre (x, y).
        quad: float64 (4, 2), the crop square in the photo: top-left, bottom-left, bottom-right, top-right
            (as seen in the upright crop).
        crop: uint8 (size, size, 3), the aligned face.
        transform: float64 (3, 3), crop (i, j, 1) -> photo (x, y, 1), pixel-centre coordinates.
    """
    index: int
    landmarks: np.ndarray
    quad: np.ndarray
    crop: np.ndarray
    transform: np.ndarray

    @property
    def size(self) -> int:
        """Side of the crop in pixels."""
        return int(self.crop.shape[0])

    @classmethod
    def from_json(cls, d: dict) -> 'AlignedFace':
        """The face ``to_json`` wrote, without its pixels (a black crop of its size): enough for ``paste_back``."""
        size = int(d['size'])
        return cls(int(d['index']), np.asarray(d['landmarks'], np.float64), np.asarray(d['quad'], np.float64),
                   np.zeros((size, size, 3), np.uint8), np.asarray(d['transform'], np.float64))

    def to_json(self) -> dict:
        """JSON-serialisable dict: index, size, landmarks, quad, transform (nested lists; no pixels)."""
        return {'index': self.index, 'size': self.size, 'landmarks': self.landmarks.tolist(),
                'quad': self.quad.tolist(), 'transform': self.transform.tolist()}


def _check_photo(photo, name='photo'):
    """The photo as an array, checked.

    Args:
        photo: the input to check.
        name: what to call it in the error.

    Returns:
        uint8 (H, W, 3) ndarray.

    Raises:
        AlignError: not uint8 (H, W, 3) with H, W >= 2.
    """
    a = np.asarray(photo)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3 or min(a.shape[:2]) < 2:
        raise AlignError(f'{name}: expected a uint8 array (H, W, 3) with H, W >= 2, '
                         f'got {a.dtype} {a.shape}')
    return a


def align_face(photo, landmarks, size, *, index=0, supersample=4, padding=True) -> AlignedFace:
    """FFHQ-align one face given its 68 landmarks.

    Args:
        photo: uint8 (H, W, 3).
        landmarks: float (68, 2), dlib order, photo pixel-centre (x, y).
        size: crop side (the generator's resolution, e.g. 1024).
        index: stored in the result.
        supersample: warp at `supersample * size`, then Lanczos down (FFHQ: 4).
        padding: blurred-reflection padding where the crop leaves the photo (FFHQ: on).

    Returns:
        AlignedFace with crop uint8 (size, size, 3).

    Raises:
        NoFaceError: the landmarks give a crop square under 8 px, or one centred outside the photo.
        AlignError: bad photo, size, supersample or landmarks.
    """
    photo = _check_photo(photo)
    if not (isinstance(size, (int, np.integer)) and size >= 4):
        raise AlignError(f'size: expected an int >= 4, got {size!r}')
    if not (isinstance(supersample, (int, np.integer)) and 1 <= supersample <= 8):
        raise AlignError(f'supersample: expected an int in 1..8, got {supersample!r}')
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2) or not np.isfinite(lm).all():
        raise AlignError(f'landmarks: expected 68 finite (x, y) points, got shape {lm.shape}')
    with np.errstate(invalid='ignore', divide='ignore'):
        quad, qsize = ffhq_quad(lm)
    if not (np.isfinite(qsize) and qsize >= _MIN_QSIZE):
        raise NoFaceError(f'landmarks: face {index} is degenerate (crop side {qsize:.3g} px < {_MIN_QSIZE:g})')
    h, w = photo.shape[:2]
    cx, cy = quad.mean(0)
    if not (-0.5 <= cx <= w - 0.5 and -0.5 <= cy <= h - 0.5):
        raise NoFaceError(f'landmarks: face {index} is centred at ({cx:.1f}, {cy:.1f}), outside the '
                          f'{w}x{h} photo')
    crop = warp_ffhq(photo, quad, qsize, int(size), int(supersample), padding)
    return AlignedFace(int(index), lm, quad, crop, crop_to_photo(quad, int(size)))


def _resolve_detector(detector):
    """A LandmarkDetector from a spec string (built by the plugin registry) or an object with `detect`.

    Raises:
        AlignError: neither a string nor an object with a `detect` method.
        SpecError, PluginError: unknown detector name or bad parameters (from the registry).
    """
    if hasattr(detector, 'detect') and callable(detector.detect):
        return detector
    if isinstance(detector, str):
        from ganinv_core.hooks import get_registry
        return get_registry().build_detector(detector)
    raise AlignError(f'detector: expected a spec string (e.g. "dlib") or a LandmarkDetector, got {detector!r}')


def align_faces(photo, size, detector='dlib', which='largest', *, supersample=4,
                padding=True) -> list[AlignedFace]:
    """Detect the faces of a photo and FFHQ-align them.

    Args:
        photo: uint8 (H, W, 3).
        size: crop side (the generator's resolution).
        detector: a detector spec string for the plugin registry (`'dlib'`, `'dlib:upsample=2'`) or an
            object with `detect(uint8 (H, W, 3)) -> list[(68, 2)]` (a LandmarkDetector).
        which: `'largest'` (biggest crop square), `'all'`, or an int index into the faces ordered left to
            right by the centre of their crop squares.
        supersample, padding: see `align_face`.

    Returns:
        list of AlignedFace, left to right (one element unless `which='all'`).

    Raises:
        NoFaceError: no face found, or `which` is out of range.
        AlignError: bad photo / size / which / detector.
    """
    photo = _check_photo(photo)
    if not (which in ('largest', 'all') or (isinstance(which, (int, np.integer)) and not isinstance(which, bool))):
        raise AlignError(f"which: expected 'largest', 'all' or a face index, got {which!r}")
    det = _resolve_detector(detector)
    from ganinv_core.hooks import blame
    with blame('detecting faces', AlignError):
        found = [np.asarray(lm, dtype=np.float64) for lm in det.detect(photo)]
    bad = [lm.shape for lm in found if lm.shape != (68, 2)]
    if bad:
        raise AlignError(f'detector {getattr(det, "name", det)!r}: returned landmarks of shape {bad[0]}, '
                         'expected (68, 2)')
    if not found:
        raise NoFaceError(f'photo: no face found by detector {getattr(det, "name", det)!r} '
                          f'in the {photo.shape[1]}x{photo.shape[0]} photo')
    with np.errstate(invalid='ignore', divide='ignore'):  # degenerate faces are rejected in align_face
        quads = [ffhq_quad(lm) for lm in found]
    order = sorted(range(len(found)), key=lambda k: quads[k][0][:, 0].mean())
    if which == 'all':
        picks = list(range(len(order)))
    elif which == 'largest':
        picks = [max(range(len(order)), key=lambda k: np.nan_to_num(quads[order[k]][1]))]
    else:
        if not -len(order) <= which < len(order):
            raise NoFaceError(f'which: face index {which} out of range, the photo has {len(order)} face(s)')
        picks = [which % len(order)]
    return [align_face(photo, found[order[k]], size, index=k, supersample=supersample, padding=padding)
            for k in picks]


def track(landmarks: list, sigma: float = 1.5) -> np.ndarray:
    """One face's landmarks through a video, smoothed in time: at each frame, a straight line in time fitted to the
    frames where the face was found, weighted by a Gaussian of ``sigma`` frames (local linear regression), and its
    value at that frame. A face moving steadily is followed exactly, up to the first and last frames (a weighted
    mean would lag there); frames without a face are filled from their neighbours, and only from the nearest one
    where the others are more than 2 ``sigma`` away.

    Per-frame detection jitters by a pixel or two, and the FFHQ crop follows the eyes and mouth, so an unsmoothed
    crop shakes; smoothing keeps it where the face is and lets it follow the face's own motion.

    Args:
        landmarks: per frame a float (68, 2) array, or None where no face was found.
        sigma: in frames (0: no smoothing; missing frames still filled from the nearest found ones).

    Returns:
        float64 (frames, 68, 2).

    Raises:
        NoFaceError: no frame has a face.
    """
    found = np.array([lm is not None for lm in landmarks])
    if not found.any():
        raise NoFaceError(f'video: no face found in any of its {len(landmarks)} frames')
    y = np.stack([np.asarray(x, np.float64) for x in landmarks if x is not None])   # [found, 68, 2]
    t = np.arange(len(landmarks), dtype=np.float64)
    d = t[None, found] - t[:, None]                      # [frames, found frames]: time from each frame
    near = np.abs(d).min(1) <= 2 * sigma
    k = np.exp(-0.5 * (d / sigma) ** 2) if sigma > 0 else (d == 0).astype(np.float64)
    k[~near] = 0
    k[~near, np.abs(d[~near]).argmin(1)] = 1.0           # far from every found frame: the nearest one
    s0, s1, s2 = k.sum(1), (k * d).sum(1), (k * d * d).sum(1)
    det = s0 * s2 - s1 ** 2
    line = det > 1e-9 * np.maximum(s0 * s2, 1e-300)     # enough spread in time to fit a slope
    # weighted least squares of y = a + b d; a = (s2 Σ k y - s1 Σ k d y) / det, or the weighted mean
    wa = np.where(line[:, None], (s2[:, None] * k - s1[:, None] * k * d) / np.where(line, det, 1)[:, None],
                  k / s0[:, None])
    return np.einsum('tf,fpc->tpc', wa, y)


def largest(faces: list) -> np.ndarray:
    """The face, of (68, 2) landmark arrays, with the biggest FFHQ crop square (a degenerate one counts as 0)."""
    with np.errstate(invalid='ignore', divide='ignore'):
        return max(faces, key=lambda lm: np.nan_to_num(ffhq_quad(lm)[1]))


def _detect_frames(frames: list, detector) -> list[list[np.ndarray]]:
    """Per frame, the (68, 2) landmarks of every face the detector finds."""
    det = _resolve_detector(detector)
    from ganinv_core.hooks import blame
    found = []
    for k, frame in enumerate(frames):
        frame = _check_photo(frame, f'frame {k}')
        with blame('detecting faces', AlignError):
            faces = [np.asarray(lm, dtype=np.float64) for lm in det.detect(frame)]
        found.append([lm for lm in faces if lm.shape == (68, 2) and np.isfinite(lm).all()])
    return found


def align_video(frames: list, size, detector='dlib', *, sigma: float = 1.5, supersample=4,
                padding=True) -> list[AlignedFace]:
    """FFHQ-align the largest face of every frame of a video, its landmarks smoothed in time (``track``).

    Returns:
        one AlignedFace per frame (``index`` 0).

    Raises:
        NoFaceError: no face in any frame. AlignError: bad frames, size or detector.
    """
    found = [largest(faces) if faces else None for faces in _detect_frames(frames, detector)]
    return [align_face(frame, lm, size, supersample=supersample, padding=padding)
            for frame, lm in zip(frames, track(found, sigma))]


def track_faces(found: list, min_share: float = 0.1) -> list[list]:
    """Follow several faces through a video.

    Frame by frame, each face found joins the track whose last sighting is nearest (FFHQ crop centres), when that
    is within half the crop's side, nearest pairs first; a face near no track starts one. Tracks seen in fewer
    than ``min_share`` of the frames, or in one frame of several, are dropped as stray detections.

    Args:
        found: per frame, a list of (68, 2) landmark arrays.

    Returns:
        Per track, left to right (by the mean crop centre), per frame its landmarks or None.
    """
    tracks: list[dict] = []   # {'seen': {frame: landmarks}, 'c': last crop centre, 'side': last crop side}
    for k, faces in enumerate(found):
        with np.errstate(invalid='ignore', divide='ignore'):   # a degenerate face: a NaN crop, joins nothing
            quads = [ffhq_quad(lm) for lm in faces]
        centres = [q.mean(0) for q, _ in quads]
        pairs = sorted((float(np.hypot(*(c - t['c']))), i, j) for i, c in enumerate(centres)
                       for j, t in enumerate(tracks))
        taken_i, taken_j = set(), set()
        for dist, i, j in pairs:
            if i not in taken_i and j not in taken_j and dist < 0.5 * tracks[j]['side']:
                taken_i.add(i), taken_j.add(j)
                tracks[j]['seen'][k], tracks[j]['c'], tracks[j]['side'] = faces[i], centres[i], quads[i][1]
        for i in sorted(set(range(len(faces))) - taken_i):
            tracks.append({'seen': {k: faces[i]}, 'c': centres[i], 'side': quads[i][1]})
    need = max(min(2, len(found)), math.ceil(min_share * len(found)))   # one sighting in a video: a stray
    keep = [t for t in tracks if len(t['seen']) >= need]
    keep.sort(key=lambda t: float(np.mean([ffhq_quad(lm)[0].mean(0)[0] for lm in t['seen'].values()])))
    return [[t['seen'].get(k) for k in range(len(found))] for t in keep]


def align_video_faces(frames: list, size, detector='dlib', *, sigma: float = 1.5, min_share: float = 0.1,
                      supersample=4, padding=True) -> list[dict[int, AlignedFace]]:
    """FFHQ-align every face followed through a video (``track_faces``).

    Returns:
        Per face, left to right, ``{frame index: AlignedFace}`` (``index`` = the face's place) over the frames from
        its first sighting to its last, its landmarks smoothed in time (``track``: frames of that span where it was
        missed are filled from its neighbours).

    Raises:
        NoFaceError: no face in any frame. AlignError: bad frames, size or detector.
    """
    tracks = track_faces(_detect_frames(frames, detector), min_share)
    if not tracks:
        raise NoFaceError(f'video: no face found in any of its {len(frames)} frames')
    out = []
    for i, t in enumerate(tracks):
        seen = [k for k, lm in enumerate(t) if lm is not None]
        a = seen[0]
        smooth = track(t[a:seen[-1] + 1], sigma)
        out.append({a + j: align_face(frames[a + j], lm, size, index=i, supersample=supersample, padding=padding)
                    for j, lm in enumerate(smooth)})
    return out


def _edge_mask(n, feather):
    """The feathered square mask of paste-back.

    Args:
        n: side in pixels.
        feather: width of the soft edge as a fraction of `n`.

    Returns:
        float32 (n, n): 1 inside, ramping (smoothstep) to 0 over `feather * n` pixels at each edge.
    """
    if feather <= 0:
        return np.ones((n, n), np.float32)
    d = np.minimum(np.arange(n) + 0.5, n - 0.5 - np.arange(n)) / (feather * n)
    t = np.clip(d, 0, 1)
    ramp = (t * t * (3 - 2 * t)).astype(np.float32)
    return np.minimum(ramp[:, None], ramp[None, :])


def paste_back(photo, restored, face: AlignedFace, feather=0.1) -> np.ndarray:
    """Warp a restored crop back into the photo and blend it in with a feathered square mask.

    Args:
        photo: uint8 (H, W, 3), the photo `face` was aligned from (or one already pasted into).
        restored: uint8 (R, R, 3), the restored crop; any R (scaled to the aligned crop's frame).
        face: the AlignedFace.
        feather: width of the mask's soft edge as a fraction of the crop side, in [0, 0.5].

    Returns:
        uint8 (H, W, 3), a new array: `photo` outside the quad, the restored face inside it.

    Raises:
        AlignError: bad photo, a restored crop that is not uint8 (R, R, 3), or feather outside [0, 0.5].
    """
    photo = _check_photo(photo)
    restored = _check_photo(restored, 'restored')
    if restored.shape[0] != restored.shape[1]:
        raise AlignError(f'restored: expected a square crop, got {restored.shape[1]}x{restored.shape[0]}')
    if not 0 <= feather <= 0.5:
        raise AlignError(f'feather: expected a fraction in [0, 0.5], got {feather!r}')
    h, w = photo.shape[:2]
    quad = np.asarray(face.quad, dtype=np.float64)
    x0, y0 = (max(math.floor(v) - 1, 0) for v in quad.min(0))
    x1, y1 = min(math.ceil(quad[:, 0].max()) + 2, w), min(math.ceil(quad[:, 1].max()) + 2, h)
    out = photo.copy()
    if x1 <= x0 or y1 <= y0:
        return out
    # Bring the restored crop near the photo's scale first: the bilinear warp below does not antialias.
    side = float(np.hypot(*(quad[3] - quad[0])))
    r = restored.shape[0]
    src = Image.fromarray(restored)
    if side < r / 1.5:
        r = max(round(side), 2)
        src = src.resize((r, r), Image.LANCZOS)
    # Pillow AFFINE maps output edge coords (u, v) of the region to source edge coords:
    # photo p = (u, v) + (x0, y0) - 0.5;  crop c = inv(T) p;  source edge = (c + 0.5) * r / size.
    inv = np.linalg.inv(face.transform)
    k = r / face.size
    lin = k * inv[:2, :2]
    off = k * (inv[:2, :2] @ [x0 - 0.5, y0 - 0.5] + inv[:2, 2] + 0.5)
    data = (lin[0, 0], lin[0, 1], off[0], lin[1, 0], lin[1, 1], off[1])
    region = (x1 - x0, y1 - y0)
    warped = np.asarray(src.transform(region, Image.AFFINE, data, Image.BILINEAR), np.float32)
    mask = Image.fromarray(_edge_mask(r, feather), 'F').transform(region, Image.AFFINE, data, Image.BILINEAR)
    m = np.asarray(mask, np.float32)[..., None]
    patch = out[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = np.clip(np.rint(patch + (warped - patch) * m), 0, 255).astype(np.uint8)
    return out
