"""ganinv built-in plugin: the `dlib` landmark detector used by FFHQ face alignment (optional extra [align]).

Importing this package never needs dlib; the detector raises a PluginError naming the extra when used
without it.
"""
from ganinv_core.hooks import hookimpl

from ._detector import DlibDetector, model_path

__all__ = ['DlibDetector', 'model_path']


@hookimpl
def ganinv_landmark_detectors():
    """The detectors of this plugin: `dlib`."""
    return [DlibDetector]
