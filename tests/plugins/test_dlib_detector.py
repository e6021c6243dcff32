"""The `dlib` landmark detector plugin: loads without dlib, explains a missing extra, finds the astronaut's face."""
import importlib.util
import sys

import ganinv_dlib
import numpy as np
import pytest
from ganinv_dlib import _detector

from ganinv_core.hooks import PluginError, Registry, SpecError
from ganinv_core.io.align import align_faces

# FFHQ's mean eye centres as fractions of the crop side (the 5-point FFHQ template used by face restorers,
# 512 px: (192.98, 239.95) and (318.90, 240.19)).
FFHQ_EYES = np.array([[0.377, 0.469], [0.623, 0.469]])


def _registry():
    return Registry(plugins={'dlib': ganinv_dlib}, entry_points=False)


def test_entry_point_registers_the_detector(monkeypatch):
    monkeypatch.setenv('GANINV_LOAD_PLUGINS', 'dlib')
    assert Registry().detectors == {'dlib': ganinv_dlib.DlibDetector}


def test_params_are_typed_and_checked():
    det = _registry().build_detector('dlib:upsample=0,threshold=0.2')
    assert (det.upsample, det.threshold) == (0, 0.2)
    with pytest.raises(SpecError, match='upsample'):
        _registry().build_detector('dlib:upsample=9')


def test_without_dlib_the_error_names_the_extra(monkeypatch):
    _detector._load.cache_clear()
    monkeypatch.setitem(sys.modules, 'dlib', None)  # `import dlib` raises ImportError
    monkeypatch.setattr(_detector, 'model_path', lambda: 'unused.dat')
    det = _registry().build_detector('dlib')  # building needs no dlib, using it does
    with pytest.raises(PluginError, match=r"pip install -e '\.\[align\]'") as e:
        det.detect(np.zeros((32, 32, 3), np.uint8))
    assert '\n' not in str(e.value)
    _detector._load.cache_clear()


def test_without_models_the_error_names_the_extra(monkeypatch):
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None)
    with pytest.raises(PluginError, match=r"face-recognition-models is not installed.*\.\[align\]"):
        _detector.model_path()


# -- on a real photo (needs the extra) -------------------------------------------------------------------

@pytest.fixture(scope='module')
def astronaut():
    pytest.importorskip('dlib', reason="dlib not installed (pip install -e '.[align]')")
    if importlib.util.find_spec('face_recognition_models') is None:
        pytest.skip("face-recognition-models not installed (pip install -e '.[align]')")
    skdata = pytest.importorskip('skimage.data')
    img = skdata.astronaut()
    return img, _registry().build_detector('dlib')


def test_finds_one_face_with_plausible_landmarks(astronaut):
    import dlib
    img, det = astronaut
    faces = det.detect(img)
    assert len(faces) == 1
    lm = faces[0]
    assert lm.shape == (68, 2) and lm.dtype == np.float64
    eyes_y, mouth_y, nose_y = lm[36:48, 1].mean(), lm[48:68, 1].mean(), lm[27:36, 1].mean()
    assert eyes_y < nose_y < mouth_y
    assert lm[36:42, 0].mean() < lm[42:48, 0].mean()  # 36-41: the eye on the image's left
    (box,) = dlib.get_frontal_face_detector()(img, 1)[:1]
    pad = 0.15 * box.width()  # the jaw line may leave the HOG box a little
    assert (lm[:, 0] > box.left() - pad).all() and (lm[:, 0] < box.right() + pad).all()
    assert (lm[:, 1] > box.top() - pad).all() and (lm[:, 1] < box.bottom() + pad).all()


def test_threshold_trades_misses_for_false_faces(astronaut):
    img, _ = astronaut
    assert len(_registry().build_detector('dlib:threshold=-0.5').detect(img)) >= 2  # the mission patch
    assert len(_registry().build_detector('dlib:threshold=3').detect(img)) == 0


def test_aligned_eyes_land_on_ffhq_positions(astronaut):
    img, det = astronaut
    (face,) = align_faces(img, 256, det)
    inv = np.linalg.inv(face.transform)
    eyes = np.stack([face.landmarks[36:42].mean(0), face.landmarks[42:48].mean(0)])
    crop_eyes = (np.c_[eyes, np.ones(2)] @ inv.T)[:, :2] / face.size
    np.testing.assert_allclose(crop_eyes, FFHQ_EYES, atol=0.03)
    # and the pixels agree: the eyes are dark spots in the crop where the landmarks say
    for x, y in crop_eyes * face.size:
        patch = face.crop[int(y) - 4:int(y) + 5, int(x) - 4:int(x) + 5].astype(float).mean()
        assert patch < face.crop.astype(float).mean()
