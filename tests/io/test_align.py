"""FFHQ alignment geometry and paste-back, on synthetic landmarks and synthetic photos (no detector needed)."""
import json
import types

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter

from ganinv_core import hooks
from ganinv_core.io._ffhq import crop_to_photo, ffhq_quad, warp_ffhq
from ganinv_core.io.align import (
    AlignedFace,
    AlignError,
    NoFaceError,
    align_face,
    align_faces,
    paste_back,
)


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


def test_quad_of_a_face_with_the_mouth_off_axis_matches_hand_computed():
    # eyes level, eye-to-eye e = (50, 0); mouth centre off to the left, eye-to-mouth m = (-28, 46).
    # perp(m) = (-46, -28), so x = e - perp(m) = (96, 28), |x| = 100, already max(2 |e|, 1.8 |m|) =
    # max(100, 96.9): the crop turns towards the face's axis though the eyes are level; y = perp(x) = (-28, 96).
    # centre = eye mean + 0.1 m = (125, 100) + (-2.8, 4.6) = (122.2, 104.6); corners c -/+ x -/+ y.
    lm = landmarks((100.0, 100.0), (150.0, 100.0), (77.0, 146.0), (117.0, 146.0))
    q, s = ffhq_quad(lm)
    np.testing.assert_allclose(q, [[54.2, -19.4], [-1.8, 172.6], [190.2, 228.6], [246.2, 36.6]], atol=1e-9)
    assert s == pytest.approx(200.0)


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


# -- crop, padding and warp: the FFHQ dataset script's recipe, step by step --------------------------------

def _ffhq_recipe(photo, quad, qsize, size, supersample):
    """The FFHQ dataset script's crop -> pad -> warp -> downscale, written out literally (no shrink step)."""
    img, quad = Image.fromarray(photo), quad.copy()
    assert np.floor(qsize / size * 0.5) <= 1
    border = max(int(np.rint(qsize * 0.1)), 3)
    lo, hi = np.floor(quad.min(0)).astype(int), np.ceil(quad.max(0)).astype(int)
    box = (max(lo[0] - border, 0), max(lo[1] - border, 0), min(hi[0] + border, img.width),
           min(hi[1] + border, img.height))
    if box[2] - box[0] < img.width or box[3] - box[1] < img.height:
        img, quad = img.crop(box), quad - box[:2]
    lo, hi = np.floor(quad.min(0)).astype(int), np.ceil(quad.max(0)).astype(int)
    pad = np.maximum([border - lo[0], border - lo[1], hi[0] - img.width + border, hi[1] - img.height + border], 0)
    if pad.max() > border - 4:
        pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
        a = np.pad(np.float32(img), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), 'reflect')
        h, w, _ = a.shape
        yy, xx, _ = np.ogrid[:h, :w, :1]
        fade = np.maximum(1.0 - np.minimum(np.float32(xx) / pad[0], np.float32(w - 1 - xx) / pad[2]),
                          1.0 - np.minimum(np.float32(yy) / pad[1], np.float32(h - 1 - yy) / pad[3]))
        a += (gaussian_filter(a, [qsize * 0.02, qsize * 0.02, 0]) - a) * np.clip(fade * 3.0 + 1.0, 0.0, 1.0)
        a += (np.median(a, axis=(0, 1)) - a) * np.clip(fade, 0.0, 1.0)
        img, quad = Image.fromarray(np.uint8(np.clip(np.rint(a), 0, 255)), 'RGB'), quad + pad[:2]
    big = size * supersample
    img = img.transform((big, big), Image.QUAD, tuple((quad + 0.5).ravel()), Image.BILINEAR)
    return np.asarray(img.resize((size, size), Image.LANCZOS) if supersample > 1 else img)


@pytest.mark.parametrize('shift, angle, padded', [
    ((60, 150), 0.3, True),    # the quad leaves the photo: reflect, blur and fade padding
    ((85, 150), 0.0, True),    # inside, 2 px from the edge: less than border - 4 spare, padded all the same
    ((89, 150), 0.0, False),   # inside, 6 px from the edge: cropped, not padded
    ((150, 150), -0.2, False),  # well inside
])
def test_crop_pad_warp_follow_the_ffhq_recipe(shift, angle, padded):
    rng = np.random.default_rng(3)
    photo = rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)  # texture: every blur and fade shows
    quad, qsize = ffhq_quad(similarity(CANON, angle, 1.0, shift))  # qsize 165.6 px
    crop = warp_ffhq(photo, quad, qsize, 64, 4)
    np.testing.assert_array_equal(crop, _ffhq_recipe(photo, quad, qsize, 64, 4))
    assert (crop != warp_ffhq(photo, quad, qsize, 64, 4, padding=False)).any() == padded


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
    return np.asarray(Image.fromarray(coarse).resize((w + 80, h + 80), Image.BICUBIC))[40:40 + h, 40:40 + w]


@pytest.mark.parametrize('restored_scale', [1, 2])
def test_paste_back_of_unchanged_crop_reproduces_photo(restored_scale):
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


@pytest.mark.parametrize('pose', [(0.0, 1.0), (0.5, 1.2)])
def test_paste_back_puts_each_crop_pixel_where_it_came_from(pose):
    # On a ramp photo a misplaced paste shows as an offset in photo pixels (a half-pixel slip fails).
    lm = similarity(CANON, *pose, (160, 150))
    yy, xx = np.mgrid[:300, :320].astype(np.float64)
    for axis in (0, 1):
        photo = _ramp_photo(axis)
        face = align_face(photo, lm, 128)
        out = paste_back(np.zeros_like(photo), face.crop, face, feather=0.0).astype(np.float64)
        cc = to_crop(face, np.c_[xx.ravel(), yy.ravel()]).reshape(*xx.shape, 2)
        core = ((cc > 8) & (cc < 120)).all(-1)
        err = ((out[..., 0] - out[..., 1] + 255) / 2 - ((xx, yy)[axis] * 0.7 + 20))[core] / 0.7
        assert abs(err.mean()) < 0.1 and np.abs(err).max() < 2.5, f'axis {axis}: offset {err.mean():.3f} px'


def test_paste_back_antialiases_a_large_restored_crop():
    # A 512 px crop of pixel noise pasted onto a face ~166 px across: downscaled first, it averages out;
    # sampled directly by the bilinear warp it would stay as noisy as the crop.
    photo = np.zeros((300, 300, 3), np.uint8)
    face = align_face(photo, similarity(CANON, 0.0, 1.0, (150, 150)), 64)
    noise = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    out = paste_back(photo, noise, face, feather=0.0)
    core = out[110:190, 110:190].astype(np.float64)
    assert core.std() < 0.5 * noise.std()


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


class _Fixed(hooks.LandmarkDetector):
    """A third party's detector: one face of CANON's shape at a place given in the spec."""
    name = 'fixed-face'
    help = 'test detector'
    params = (hooks.Param('x', float, 100.0, 'face centre x'), hooks.Param('y', float, 100.0, 'face centre y'))

    def detect(self, image):
        return [similarity(CANON, 0.0, 1.0, (self.x, self.y))]


def test_a_plugin_detector_is_found_through_the_registry(monkeypatch):
    plugin = types.ModuleType('third_party_faces')
    plugin.ganinv_landmark_detectors = hooks.hookimpl(lambda: [_Fixed])
    reg = hooks.Registry(plugins={'third-party': plugin}, entry_points=False)
    monkeypatch.setattr(hooks, 'get_registry', lambda: reg)
    assert reg.detectors == {'fixed-face': _Fixed}
    photo = np.zeros((200, 260, 3), np.uint8)
    (face,) = align_faces(photo, 32, 'fixed-face:x=150,y=90')
    np.testing.assert_allclose(face.landmarks, similarity(CANON, 0.0, 1.0, (150, 90)))
    np.testing.assert_allclose(face.quad, ffhq_quad(face.landmarks)[0])
    with pytest.raises(hooks.SpecError, match='nose-finder'):
        align_faces(photo, 32, 'nose-finder')


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
    np.testing.assert_allclose(face.transform, crop_to_photo(ffhq_quad(face.landmarks)[0], 32))


def test_tracking_smooths_jitter_and_fills_frames_without_a_face():
    from ganinv_core.io.align import track
    rng = np.random.RandomState(0)
    base = rng.rand(68, 2) * 100
    truth = [base + [2.0 * t, 0] for t in range(12)]                  # a face moving 2 px a frame
    seen = [x + rng.randn(68, 2) * 1.5 for x in truth]               # detections jitter by ~1.5 px
    seen[5] = None                                                   # and miss a frame
    smooth = track(seen)
    inner = range(2, 10)
    err = lambda a: np.mean([np.abs(a[t] - truth[t]).mean() for t in inner if a[t] is not None])  # noqa: E731
    assert err(smooth) < 0.6 * err(seen)                              # closer to the true path
    steady = track(truth[:3] + [None] + truth[4:])                    # steady motion: followed exactly, ends too
    np.testing.assert_allclose(steady, np.stack(truth), atol=1e-9)
    assert np.abs(smooth[5] - truth[5]).mean() < 1.0                  # the missed frame, filled in
    np.testing.assert_allclose(track(seen, sigma=0)[[0, 4, 6]], np.stack([seen[0], seen[4], seen[6]]))
    np.testing.assert_allclose(track(seen, sigma=0)[5], seen[4])     # the nearest found frame (the earlier of two)
    with pytest.raises(NoFaceError, match='no face found in any of its 2 frames'):
        track([None, None])


def test_several_faces_are_followed_through_a_video_left_to_right():
    """Two faces walking apart (one missed in a frame) stay two tracks, ordered left to right; a detection seen in
    one frame only is dropped; a face that turns up later is followed from then on."""
    from ganinv_core.io.align import track_faces
    left = [similarity(CANON, 0.0, 1.0, (200 - 8 * t, 150)) for t in range(8)]
    right = [similarity(CANON, 0.0, 0.8, (320 + 8 * t, 160)) for t in range(8)]
    late = [similarity(CANON, 0.1, 0.6, (600, 120 + 2 * t)) for t in range(8)]
    found = [[right[t], left[t]] for t in range(8)]
    found[3] = [right[3]]                                     # the left face missed
    found[5].append(similarity(CANON, 0.0, 1.0, (900, 700)))  # a stray detection
    for t in range(4, 8):
        found[t].append(late[t])
    a, b, c = track_faces(found)
    assert all(np.array_equal(a[t], left[t]) for t in range(8) if t != 3) and a[3] is None
    assert all(np.array_equal(b[t], right[t]) for t in range(8))
    assert c[:4] == [None] * 4 and all(np.array_equal(c[t], late[t]) for t in range(4, 8))
    assert track_faces([[], []]) == [] and len(track_faces([[left[0]]])) == 1   # one frame: one sighting is enough


def test_align_video_faces_aligns_each_face_over_its_span_and_pastes_back_from_json():
    from ganinv_core.io.align import align_video_faces, track

    class PerFrame:   # the frame's index is its red value
        name = 'per-frame'

        def detect(self, image):
            t = int(image[0, 0, 0])
            faces = [similarity(CANON, 0.0, 1.0, (120 + 4 * t, 140))]
            return faces + ([similarity(CANON, 0.0, 0.7, (330, 150))] if t >= 2 else [])
    frames = [np.full((300, 420, 3), t, np.uint8) for t in range(5)]
    first, second = align_video_faces(frames, 32, PerFrame(), supersample=1)
    assert sorted(first) == [0, 1, 2, 3, 4] and sorted(second) == [2, 3, 4]
    assert {f.index for f in first.values()} == {0} and {f.index for f in second.values()} == {1}
    smooth = track([similarity(CANON, 0.0, 0.7, (330, 150))] * 3)
    np.testing.assert_allclose(second[3].landmarks, smooth[1])
    np.testing.assert_array_equal(second[3].crop, align_face(frames[3], smooth[1], 32, index=1, supersample=1).crop)
    face = first[1]
    back = AlignedFace.from_json(json.loads(json.dumps(face.to_json())))
    restored = np.random.RandomState(0).randint(0, 256, (32, 32, 3), np.uint8)
    np.testing.assert_array_equal(paste_back(frames[1], restored, back), paste_back(frames[1], restored, face))
    with pytest.raises(NoFaceError, match='no face found in any of its 5 frames'):
        align_video_faces(frames, 32, FakeDetector([]))
