"""dlib's HOG frontal face detector + 68-point shape predictor (the pair the FFHQ dataset was aligned with).

dlib and the model file are optional (`pip install -e '.[align]'`): nothing here imports them until the
first `detect`, so the plugin always loads and a missing extra shows up as one clear error at use.
"""
from __future__ import annotations

import functools
import importlib.util
import os

import numpy as np

from ganinv_core.hooks import LandmarkDetector, Param, PluginError

_INSTALL = "pip install -e '.[align]'  (dlib-bin + face-recognition-models)"
_MODEL = os.path.join('models', 'shape_predictor_68_face_landmarks.dat')


def model_path() -> str:
    """Path of the 68-point predictor in the `face_recognition_models` package.

    Found through the import system without executing the package's `__init__` (which needs pkg_resources).
    """
    spec = importlib.util.find_spec('face_recognition_models')
    dirs = list(spec.submodule_search_locations or []) if spec else []
    for d in dirs:
        path = os.path.join(d, _MODEL)
        if os.path.isfile(path):
            return path
    where = f'not in {dirs[0]}' if dirs else 'package face-recognition-models is not installed'
    raise PluginError(f'detector \'dlib\': model shape_predictor_68_face_landmarks.dat {where}; '
                      f'install the alignment extra: {_INSTALL}')


@functools.lru_cache(maxsize=2)
def _load(path: str):
    """(face detector, shape predictor), loaded once per process (the predictor file is ~100 MB)."""
    try:
        import dlib
    except ImportError as e:
        raise PluginError(f"detector 'dlib': dlib is not installed ({e}); install the alignment extra: "
                          f'{_INSTALL}') from None
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(path)


class DlibDetector(LandmarkDetector):
    """68 iBUG landmarks per face from dlib (HOG detector, then the ensemble-of-trees shape predictor)."""
    name = 'dlib'
    help = "dlib HOG face detector + 68-point shape predictor (FFHQ's); needs pip install -e '.[align]'"
    params = (
        Param('upsample', int, 1, 'upsample the photo this many times before detecting (finds smaller faces)',
              bounds=(0, 4)),
        Param('threshold', float, 0.5, 'minimum detection score; lower finds more faces and more false ones'),
    )

    def detect(self, image: np.ndarray) -> list[np.ndarray]:
        """Landmarks of every face found.

        Args:
            image: uint8 (H, W, 3) RGB.

        Returns:
            list of float64 (68, 2), pixel-centre (x, y) (the centre of `image[r, c]` is `(c, r)`), in the
            detector's order (highest score first).
        """
        img = np.asarray(image)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"detector 'dlib': image must be uint8 (H, W, 3), got {img.dtype} {img.shape}")
        detector, predictor = _load(model_path())
        img = np.ascontiguousarray(img)
        rects, scores, _ = detector.run(img, self.upsample, self.threshold)
        order = np.argsort(-np.asarray(scores, dtype=np.float64), kind='stable')
        shapes = [predictor(img, rects[int(k)]) for k in order]
        return [np.array([[p.x, p.y] for p in s.parts()], dtype=np.float64) for s in shapes]
