"""Devices as users name them (``'cuda'``, ``'cuda:1'``, ``'cpu'``, a ``torch.device``), checked where they are given."""
import torch

from ._errors import exc_line


class DeviceError(ValueError):
    """A device that cannot be used here (one line: where it was given, the device and torch's reason)."""


def usable_device(device, where: str) -> torch.device:
    """``device`` as a torch.device, after placing a tensor on it.

    Args:
        device: anything ``torch.device`` takes.
        where: the argument or flag that gave it, for the message (``'--device'``, ``'device'``).

    Raises:
        DeviceError: ``"<where> 'cuda': not usable here (AssertionError: Torch not compiled with CUDA enabled)"``.
    """
    try:
        dev = torch.device(device)
        torch.zeros(1, device=dev)
    except (RuntimeError, AssertionError, TypeError) as e:
        raise DeviceError(f'{where} {device!r}: not usable here ({exc_line(e)})') from None
    return dev
