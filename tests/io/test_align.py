"""FFHQ alignment geometry and paste-back, on synthetic landmarks and synthetic photos (no detector needed)."""
import json

import numpy as np
import pytest

from ganinv_core.io._ffhq import ffhq_quad
from ganinv_core.io.align import AlignedFace, AlignError, NoFaceError, align_face, align_faces, paste_back


def landmarks(eye_l, eye_r, mouth_l, mouth_r, seed=0):
    """68 points whose eye means and mouth corners are the given ones; the rest is noise (unused by FFHQ)."""
    rng = np.random.default_rng(seed)
    lm = rng.uniform(0, 50, (68, 2))
    for sl, centre in ((slice(36, 42), eye_l), (slice(42, 48), eye_r)):
        pts = rng.normal(0, 3, (6, 2))
        lm[sl] = pts - pts.mean(0) + centre
    lm[48], lm[54] = mouth_l, mouth_r
    return lm


def similarity(lm, angle, scale, shift):
    """Rotate by `angle` (radians) and scale about the origin, then shift: (N, 2) -> (N, 2)."""
    c, s = np.cos(angle), np.sin(angle)
    return scale * lm @ np.array([[c, -s], [s, c]]).T + shift


def to_crop(face, pts):
    """Photo (N, 2) -> crop (N, 2) coordinates through the inverse of face.transform."""
    h = np.c_[pts, np.ones(len(pts))] @ np.linalg.inv(face.transform).T
    return h[:, :2]


def crop_grid_in_photo(face):
    """Photo coordinates (2, S, S) of every crop pixel centre."""
    s = face.size
    j, i = np.mgrid[:s, :s].astype(np.float64)
    return np.einsum('ab,bij->aij', face.transform, np.stack([i, j, np.ones_like(i)]))[:2]


class FakeDetector:
    name = 'fake'

    def __init__(self, faces):
        self.faces = faces

    def detect(self, image):
        return [np.array(f) for f in self.faces]


CANON = landmarks((-20.0, 0.0), (20.0, 0.0), (-16.0, 46.0), (16.0, 46.0))  # a face centred at the origin


# -- the quad --------------------------------------------------------------------------------------------

@pytest.mark.parametrize('mouth_y, quad, qsize', [
    # eye-to-mouth 70 dominates: |x| = 1.8 * 70 = 126; centre = eye mean + 0.1 * (0, 70)
    (170.0, [[4, -19], [4, 233], [256, 233], [256, -19]], 252.0),
    # eye distance dominates: |x| = 2 * 60 = 120; centre = (130, 105)
    (150.0, [[10, -15], [10, 225], [250, 225], [250, -15]], 240.0),
])
def test_quad_matches_hand_computed(mouth_y, quad, qsize):
    lm = landmarks((100.0, 100.0), (160.0, 100.0), (110.0, mouth_y), (150.0, mouth_y))
    q, s = ffhq_quad(lm)
    np.testing.assert_allclose(q, quad, atol=1e-9)
    assert s == pytest.approx(qsize)


def test_quad_uses_only_eyes_and_mouth_corners():
    a = landmarks((100.0, 100.0), (160.0, 100.0), (110.0, 170.0), (150.0, 170.0), seed=1)
    b = landmarks((100.0, 100.0), (160.0, 100.0), (110.0, 170.0), (150.0, 170.0), seed=2)
    np.testing.assert_allclose(ffhq_quad(a)[0], ffhq_quad(b)[0], atol=1e-9)


def test_tilted_face_gives_tilted_quad():
    # eye line tilted, mouth straight below the eyes: the quad turns half-way, averaging
    # the eye line with the face's axis; its sides stay orthogonal and equal.
    lm = landmarks((100.0, 100.0), (160.0, 110.0), (110.0, 175.0), (150.0, 180.0))
    q, s = ffhq_quad(lm)
    top, left = q[3] - q[0], q[1] - q[0]
    assert np.dot(top, left) == pytest.approx(0, abs=1e-9)
    assert np.hypot(*top) == pytest.approx(s) and np.hypot(*left) == pytest.approx(s)
    assert top[1] > 0  # tilted clockwise like the eye line


# -- a known rotation and scale is undone --------------------------------------------------------------

@pytest.mark.parametrize('angle, scale, shift', [(0.0, 1.0, (256, 256)), (0.5, 1.3, (240, 270)),
                                                 (-1.1, 0.8, (260, 250)), (np.pi, 1.5, (256, 240))])
def test_similarity_is_undone_exactly(angle, scale, shift):
    lm = similarity(CANON, angle, scale, shift)
    q0, s0 = ffhq_quad(CANON)
    q, s = ffhq_quad(lm)
    np.testing.assert_allclose(q, similarity(q0, angle, scale, shift), atol=1e-9)
    assert s == pytest.approx(s0 * scale)
    photo = np.zeros((512, 512, 3), np.uint8)
    ref = align_face(photo, similarity(CANON, 0.0, 1.0, (256, 256)), 32, supersample=1)
    face = align_face(photo, lm, 32, supersample=1)
    # every landmark lands at the same crop coordinates, whatever the pose in the photo
    np.testing.assert_allclose(to_crop(face, lm), to_crop(ref, ref.landmarks), atol=1e-9)


def _render(angle, scale, shift, size=512):
    """A smooth pattern drawn in the canonical face frame, seen through the similarity (pose)."""
    y, x = np.mgrid[:size, :size].astype(np.float64)
    c, s = np.cos(angle), np.sin(angle)
    u, v = (x - shift[0]) / scale, (y - shift[1]) / scale  # invert the pose: photo -> canonical
    u, v = c * u + s * v, -s * u + c * v
    img = np.stack([128 + 80 * np.sin(u / 17) * np.cos(v / 23), 128 + 80 * np.cos((u + v) / 29),
                    128 + 60 * np.sin(v / 13)], -1)
    return np.rint(img).astype(np.uint8)


@pytest.mark.parametrize('angle, scale', [(0.6, 1.4), (-2.0, 0.9)])
def test_rotated_scaled_photo_gives_the_same_crop(angle, scale):
    ref = align_face(_render(0.0, 1.0, (256, 256)), similarity(CANON, 0.0, 1.0, (256, 256)), 64)
    face = align_face(_render(angle, scale, (256, 256)), similarity(CANON, angle, scale, (256, 256)), 64)
    diff = np.abs(face.crop.astype(float) - ref.crop.astype(float))
    assert diff.mean() < 1.5 and np.percentile(diff, 99) < 8


# -- the transform: crop pixel (i, j) shows photo point transform @ (i, j, 1) ------------------------------

def _ramp_photo(axis, h=300, w=320, slope=0.7):
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    r = (xx if axis == 0 else yy) * slope + 20
    # R rises, G falls: (R - G) / 2 cancels Pillow's uint8 truncation, (R + G) cancels the geometry
    return np.rint(np.stack([r, 255 - r, np.full_like(r, 128)], -1)).astype(np.uint8)


@pytest.mark.parametrize('size, supersample, pose, shrink', [
    (64, 4, (0.0, 1.0), 1), (64, 1, (0.0, 1.0), 1), (64, 4, (0.4, 1.3), 2), (200, 2, (-0.3, 1.0), 1),
    (16, 4, (0.0, 1.0), 7),  # big face, small crop: the photo is shrunk (by `shrink`) first
])
def test_transform_maps_crop_pixels_to_photo_points(size, supersample, pose, shrink):
    lm = similarity(landmarks((-30.0, -35.0), (30.0, -35.0), (-20.0, 35.0), (20.0, 35.0)), *pose, (160, 150))
    assert max(int(ffhq_quad(lm)[1] / size * 0.5), 1) == shrink
    slope = 0.7
    for axis in (0, 1):
        photo = _ramp_photo(axis, slope=slope)
        face = align_face(photo, lm, size, supersample=supersample)
        p = crop_grid_in_photo(face)
        m = 4 * shrink + 4  # stay clear of the photo border (resampling footprints, padding blur)
        inside = (p[0] > m) & (p[0] < 320 - 1 - m) & (p[1] > m) & (p[1] < 300 - 1 - m)
        assert inside.mean() > 0.5
        c = face.crop.astype(np.float64)
        err = ((c[..., 0] - c[..., 1] + 255) / 2 - (p[axis] * slope + 20))[inside] / slope  # photo pixels
        assert abs(err.mean()) < 0.1 * shrink, f'axis {axis}: mean offset {err.mean():.3f} px'
        assert np.abs(err).max() < 2.0 * shrink


# -- padding ---------------------------------------------------------------------------------------------

def test_padding_fills_outside_the_photo():
    photo = np.full((200, 200, 3), 100, np.uint8)
    lm = landmarks((10.0, 60.0), (50.0, 60.0), (15.0, 105.0), (45.0, 105.0))  # the quad leaves the photo
    face = align_face(photo, lm, 48)
    assert np.abs(face.crop.astype(int) - 100).max() <= 1  # reflection, blur and median of a flat photo
    bare = align_face(photo, lm, 48, padding=False)
    assert (bare.crop[:, :4] == 0).all()  # left of the photo: nothing to sample


# -- paste-back --------------------------------------------------------------------------------------------

def _smooth_photo(h=320, w=300, seed=0):
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(30, 225, (h // 40 + 2, w // 40 + 2, 3)).astype(np.uint8)
    from PIL import Image
    return np.asarray(Image.fromarray(coarse).resize((w + 80, h + 80), Image.BICUBIC))[40:40 + h, 40:40 + w]


@pytest.mark.parametrize('restored_scale', [1, 2])
def test_paste_back_of_unchanged_crop_reproduces_photo(restored_scale):
    from PIL import Image
    photo = _smooth_photo()
    lm = similarity(CANON, 0.3, 1.0, (150, 160))
    face = align_face(photo, lm, 128)
    s = face.size * restored_scale
    restored = np.asarray(Image.fromarray(face.crop).resize((s, s), Image.BICUBIC))
    out = paste_back(photo, restored, face, feather=0.1)
    assert out.shape == photo.shape and out.dtype == np.uint8
    # photo pixels by their crop coordinates: inside the mask's flat part vs. outside the crop
    yy, xx = np.mgrid[:photo.shape[0], :photo.shape[1]]
    cc = to_crop(face, np.c_[xx.ravel(), yy.ravel()]).reshape(*xx.shape, 2)
    core = ((cc > 0.1 * 128 + 1) & (cc < 0.9 * 128 - 2)).all(-1)
    outside = ((cc < -1.5) | (cc > 128.5)).any(-1)
    diff = np.abs(out.astype(int) - photo.astype(int))
    assert core.sum() > 5000
    assert diff[core].mean() < 1.5 and diff[core].max() <= 12
    assert (diff[outside] == 0).all()


def test_paste_back_feathered_mask():
    photo = np.zeros((200, 200, 3), np.uint8)
    face = align_face(photo, similarity(CANON, 0.0, 1.0, (100, 100)), 64)
    out = paste_back(photo, np.full((64, 64, 3), 255, np.uint8), face, feather=0.25)
    c = face.transform @ [31.5, 31.5, 1]  # crop centre in the photo
    assert (out[int(c[1]) - 5:int(c[1]) + 5, int(c[0]) - 5:int(c[0]) + 5] == 255).all()
    row = out[int(c[1]), :, 0].astype(int)  # across the middle: 0 -> ramp up -> 255 -> ramp down -> 0
    left, right = face.quad[:, 0].min(), face.quad[:, 0].max()
    assert row[int(left) - 2] == 0 and row[int(right) + 3] == 0
    ramp = row[int(left):int(c[0])]
    assert (np.diff(ramp) >= 0).all() and 0 < ramp[len(ramp) // 8] < 255
    hard = paste_back(photo, np.full((64, 64, 3), 255, np.uint8), face, feather=0.0)
    assert hard[int(c[1]), int(left) + 3, 0] == 255


# -- which faces, errors, JSON --------------------------------------------------------------------------------

def test_which_selects_faces_left_to_right():
    photo = np.zeros((300, 400, 3), np.uint8)
    small_right = similarity(CANON, 0.0, 0.5, (300, 150))
    big_left = similarity(CANON, 0.0, 1.0, (100, 150))
    det = FakeDetector([small_right, big_left])
    faces = align_faces(photo, 32, det, 'all')
    assert [f.index for f in faces] == [0, 1]
    np.testing.assert_allclose(faces[0].landmarks, big_left)
    np.testing.assert_allclose(faces[1].landmarks, small_right)
    (largest,) = align_faces(photo, 32, det, 'largest')
    np.testing.assert_allclose(largest.landmarks, big_left)
    assert align_faces(photo, 32, det, 1)[0].index == 1
    np.testing.assert_allclose(align_faces(photo, 32, det, -1)[0].landmarks, small_right)
    with pytest.raises(NoFaceError, match='out of range'):
        align_faces(photo, 32, det, 2)


def test_no_face_is_a_clear_error():
    photo = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(NoFaceError, match='no face found') as e:
        align_faces(photo, 32, FakeDetector([]))
    assert isinstance(e.value, ValueError) and '\n' not in str(e.value)
    with pytest.raises(NoFaceError, match='degenerate'):
        align_face(photo, np.full((68, 2), 10.0), 32)
    with pytest.raises(NoFaceError, match='outside'):
        align_face(photo, similarity(CANON, 0.0, 1.0, (500, 30)), 32)


@pytest.mark.parametrize('call, match', [
    (lambda p, f: align_faces(p.astype(np.float32), 32, FakeDetector([])), 'photo: expected a uint8'),
    (lambda p, f: align_faces(p, 32, FakeDetector([]), which='biggest'), 'which'),
    (lambda p, f: align_faces(p, 32, detector=3), 'detector'),
    (lambda p, f: align_faces(p, 32, FakeDetector([np.zeros((5, 2))])), r'\(5, 2\)'),
    (lambda p, f: align_face(p, CANON + 100, 3), 'size'),
    (lambda p, f: align_face(p, CANON[:10], 32), 'landmarks'),
    (lambda p, f: paste_back(p, f.crop, f, feather=0.7), 'feather'),
    (lambda p, f: paste_back(p, f.crop[:, :20], f), 'restored'),
])
def test_bad_input_is_one_line_error(call, match):
    photo = np.zeros((200, 200, 3), np.uint8)
    face = align_face(photo, CANON + 100, 32)
    with pytest.raises(AlignError, match=match) as e:
        call(photo, face)
    assert '\n' not in str(e.value)


def test_to_json_round_trips():
    photo = np.zeros((200, 200, 3), np.uint8)
    face = align_face(photo, similarity(CANON, 0.2, 1.1, (100, 100)), 32)
    d = json.loads(json.dumps(face.to_json()))
    assert d['index'] == 0 and d['size'] == 32
    np.testing.assert_allclose(d['transform'], face.transform)
    np.testing.assert_allclose(d['quad'], face.quad)
    np.testing.assert_allclose(d['landmarks'], face.landmarks)
    assert isinstance(face, AlignedFace)
