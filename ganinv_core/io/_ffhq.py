"""FFHQ alignment geometry: the oriented quad from 68 landmarks, and the warp into a square crop.

Coordinates (everywhere in this module): `(x, y)` = (column, row) in *pixel-centre* units, so the centre of
pixel `img[r, c]` is `(c, r)` and an `H x W` image covers `[-0.5, W - 0.5] x [-0.5, H - 0.5]`. dlib's
landmarks use this convention; Pillow's `transform` uses pixel *edges* (centre of `img[r, c]` at
`(c + 0.5, r + 0.5)`), hence the `+/- 0.5` at every Pillow call.

The steps follow the FFHQ dataset's recipe (Karras et al. 2019): quad -> shrink big faces -> crop with a
border -> pad with a blurred reflection where the quad leaves the photo -> bilinear quad warp at
`supersample x size` -> Lanczos down to `size`. One deliberate difference: when shrinking, the quad is mapped
into the shrunk image exactly (half-pixel and rounding included) instead of divided by the integer factor, so
the crop is an exact function of the quad and `crop_to_photo` below is exact. The shift this removes is below
`shrink / 2` photo pixels, under 1/4000 of the face.
"""
import math

import numpy as np
from PIL import Image

# dlib 68-point indices (iBUG 300-W): 36-41 the eye on the image's left, 42-47 the other, 48 and 54 the
# outer mouth corners.
_EYE_L, _EYE_R, _MOUTH_L, _MOUTH_R = slice(36, 42), slice(42, 48), 48, 54


def _perp(v):
    """A vector turned a quarter turn, x axis onto y axis (clockwise on screen, where y points down).

    Args:
        v: (2,) vector `(a, b)`.

    Returns:
        float (2,) array `(-b, a)`.
    """
    return np.array([-v[1], v[0]])


def ffhq_quad(landmarks):
    """The FFHQ crop square of one face.

    Args:
        landmarks: float array (68, 2), dlib order, pixel-centre (x, y).

    Returns:
        (quad, qsize): quad float64 (4, 2), corners top-left, bottom-left, bottom-right, top-right of the
        upright crop (Pillow's QUAD order); qsize = its side length in pixels.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    eye_l, eye_r = lm[_EYE_L].mean(0), lm[_EYE_R].mean(0)
    eye_avg, eye_to_eye = (eye_l + eye_r) / 2, eye_r - eye_l
    eye_to_mouth = (lm[_MOUTH_L] + lm[_MOUTH_R]) / 2 - eye_avg
    # x: the crop's half-width vector: the eye line averaged with the face's vertical axis turned level,
    # as long as the larger of 2 x eye distance and 1.8 x eye-mouth distance; y: x turned down the face.
    x = eye_to_eye - _perp(eye_to_mouth)
    x = x / np.hypot(*x) * max(2.0 * np.hypot(*eye_to_eye), 1.8 * np.hypot(*eye_to_mouth))
    y = _perp(x)
    c = eye_avg + 0.1 * eye_to_mouth
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    return quad, 2.0 * np.hypot(*x)


def crop_to_photo(quad, size):
    """The 3x3 matrix taking crop pixel-centre coordinates to photo pixel-centre coordinates.

    Crop pixel `(i, j)` has centre `(i, j)`; its Pillow edge coordinate `(i + 0.5, j + 0.5)` is the fraction
    `(i + 0.5) / size` of the way along the quad, so
    `p = tl + (tr - tl) (i + 0.5) / size + (bl - tl) (j + 0.5) / size`.

    Args:
        quad: (4, 2) corners tl, bl, br, tr in photo coordinates.
        size: crop side in pixels.

    Returns:
        float64 (3, 3) affine matrix acting on column vectors `[i, j, 1]`.
    """
    tl, bl, _, tr = np.asarray(quad, dtype=np.float64)
    ex, ey = (tr - tl) / size, (bl - tl) / size
    m = np.eye(3)
    m[:2, 0], m[:2, 1], m[:2, 2] = ex, ey, tl + 0.5 * (ex + ey)
    return m


def _pad_blurred(img, pad, qsize):
    """FFHQ's padding: reflect, then fade the padding into a blur of itself and into the median colour.

    Args:
        img: float32 (H, W, 3).
        pad: (left, top, right, bottom) in pixels, each > 0.
        qsize: side of the crop square in pixels (sets the blur's sigma, `0.02 * qsize`).

    Returns:
        float32 (top + H + bottom, left + W + right, 3).
    """
    from scipy.ndimage import gaussian_filter
    l, t, r, b = pad
    img = np.pad(img, ((t, b), (l, r), (0, 0)), mode='reflect')
    h, w, _ = img.shape
    yy, xx = np.ogrid[:h, :w]
    xx, yy = xx.astype(np.float32), yy.astype(np.float32)
    # mask: 1 at the outer edge, 0 at the original border, negative inside (so the blur reaches
    # pad/3 into the photo: `mask * 3 + 1` stays positive there).
    mask = np.maximum(1.0 - np.minimum(xx / l, (w - 1 - xx) / r),
                      1.0 - np.minimum(yy / t, (h - 1 - yy) / b))[..., None]
    sigma = qsize * 0.02
    img = img + (gaussian_filter(img, [sigma, sigma, 0]) - img) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    img = img + (np.median(img, axis=(0, 1)) - img) * np.clip(mask, 0.0, 1.0)
    return img


def warp_ffhq(photo, quad, qsize, size, supersample=4, padding=True):
    """Cut the FFHQ crop of one face out of a photo.

    Args:
        photo: uint8 (H, W, 3).
        quad, qsize: from `ffhq_quad`, photo coordinates.
        size: output side (the generator's resolution).
        supersample: warp at `supersample * size`, then Lanczos down (FFHQ: 4096 for 1024, i.e. 4).
        padding: pad with a blurred reflection where the quad leaves the photo (FFHQ's default).

    Returns:
        uint8 (size, size, 3); pixel (i, j) shows photo point `crop_to_photo(quad, size) @ [i, j, 1]`.
    """
    img = Image.fromarray(photo)
    quad = np.asarray(quad, dtype=np.float64).copy()
    shrink = math.floor(qsize / size * 0.5)
    if shrink > 1:  # big face: downscale the photo first so the bilinear warp does not alias
        w, h = img.size
        rw, rh = int(np.rint(w / shrink)), int(np.rint(h / shrink))
        img = img.resize((rw, rh), Image.LANCZOS)
        quad = (quad + 0.5) * [rw / w, rh / h] - 0.5
        qsize = qsize / shrink
    border = max(int(np.rint(qsize * 0.1)), 3)
    lo, hi = np.floor(quad.min(0)).astype(int), np.ceil(quad.max(0)).astype(int)
    # crop to the quad's bounding box plus border
    x0, y0 = max(lo[0] - border, 0), max(lo[1] - border, 0)
    x1, y1 = min(hi[0] + border, img.size[0]), min(hi[1] + border, img.size[1])
    if x1 - x0 < img.size[0] or y1 - y0 < img.size[1]:
        img = img.crop((x0, y0, x1, y1))
        quad -= [x0, y0]
        lo, hi = lo - [x0, y0], hi - [x0, y0]
    pad = [max(-lo[0] + border, 0), max(-lo[1] + border, 0),
           max(hi[0] - img.size[0] + border, 0), max(hi[1] - img.size[1] + border, 0)]
    if padding and max(pad) > border - 4:
        pad = [max(p, int(np.rint(qsize * 0.3))) for p in pad]
        arr = _pad_blurred(np.asarray(img, dtype=np.float32), pad, qsize)
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), 'RGB')
        quad += pad[:2]
    big = size * supersample
    img = img.transform((big, big), Image.QUAD, tuple((quad + 0.5).ravel()), Image.BILINEAR)
    if supersample > 1:
        img = img.resize((size, size), Image.LANCZOS)
    return np.asarray(img)
