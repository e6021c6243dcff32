"""Reading untrusted weight files: torch state dicts through ``torch.load(weights_only=True)`` only."""
from __future__ import annotations

import pickle

import torch

from .._errors import exc_line


def read_state_dict(path: str, what: str, error: type[Exception]) -> dict:
    """The state dict in ``path`` (unwrapped from a ``{'state_dict': ...}`` checkpoint).

    Only tensors and plain containers are unpickled: a file that asks for anything else is refused, and none of
    it runs.

    Args:
        path: the file.
        what: how error messages name it (e.g. ``"ArcFace weights 'r50.pth'"``).
        error: the exception class raised.

    Raises:
        error: unreadable, refused by the weights-only unpickler, or not a dict (one line: ``what``, the reason).
    """
    try:
        sd = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:  # torch's weights-only refusal: its reason follows a long preamble that
        why = str(e).partition('WeightsUnpickler error:')[2].split('\n')   # suggests weights_only=False
        why = next((w.strip() for w in why if w.strip()), exc_line(e))
        raise error(f'{what}: not a state dict of plain tensors ({why}; nothing in it was run)') from None
    except Exception as e:  # noqa: BLE001 - any failure of an untrusted file becomes one clear line
        raise error(f'{what}: cannot read it as a torch state dict ({exc_line(e)})') from None
    if not isinstance(sd, dict):
        raise error(f'{what}: expected a state dict, got {type(sd).__name__}')
    return sd.get('state_dict', sd)
