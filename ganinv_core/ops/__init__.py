"""Custom ops: `bias_act` and `upfirdn2d` with NVIDIA's semantics, `modconv_epilogue` (the modulated
convolution's demodulation + noise + bias_act in one pass), `lpips_distance` (one LPIPS feature level's
normalise-weight-compare in one pass) and `noise_autocorr` (the noise regulariser's lag-1 autocorrelations); each a
reference path + compiled kernels."""
from ._backend import BackendChoiceError
from ._ext import ExtUnavailableError
from .bias_act import ACTIVATIONS, OpArgumentError, bias_act, bias_act_vjp
from .epilogue import modconv_epilogue, modconv_epilogue_vjp
from .lpips import lpips_distance
from .noise import noise_autocorr
from .upfirdn2d import downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d

__all__ = ['ACTIVATIONS', 'OpArgumentError', 'BackendChoiceError', 'ExtUnavailableError', 'bias_act', 'bias_act_vjp',
           'modconv_epilogue', 'modconv_epilogue_vjp', 'lpips_distance', 'noise_autocorr', 'upfirdn2d', 'setup_filter',
           'upsample2d', 'downsample2d', 'filter2d', 'doctor_report']


def doctor_report() -> str:
    """Which backend each op uses on each device, versions, build errors (see `ops.doctor`)."""
    from .doctor import doctor_report as report
    return report()
