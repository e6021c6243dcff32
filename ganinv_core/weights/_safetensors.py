"""The project's own format: a `.safetensors` state dict with the Generator config in its metadata."""
import json
import os
import tempfile

from .._errors import exc_line
from ._errors import WeightsError

FORMAT = 'ganinv-stylegan2'


def write(state_dict, init_kwargs, path, overwrite=False):
    """Write tensors + config atomically (temp file + os.replace).

    Args:
        state_dict: {name: tensor}.
        init_kwargs: JSON-serialisable Generator kwargs.
        path: destination.
        overwrite: replace an existing file.

    Raises:
        WeightsError: the file exists and overwrite is False.
    """
    from safetensors.torch import save_file
    path = os.fspath(path)
    if os.path.isdir(path):
        raise WeightsError(f'{path}: is a folder, not a file name')
    if os.path.exists(path) and not overwrite:
        raise WeightsError(f'{path}: already exists (pass --overwrite / overwrite=True to replace it)')
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    meta = {'format': FORMAT, 'format_version': '1', 'init_kwargs': json.dumps(init_kwargs)}
    folder, tmp = os.path.dirname(os.path.abspath(path)), None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp-', suffix='.safetensors')
        os.close(fd)
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, path)
    except OSError as e:
        raise WeightsError(f'{path}: cannot write it ({exc_line(e)})') from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def read(path):
    """Read a ganinv `.safetensors` file.

    Returns:
        (init_kwargs, state_dict).

    Raises:
        WeightsError: unreadable file, or no ganinv generator metadata.
    """
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(os.fspath(path), framework='pt', device='cpu') as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f'{path}: not a readable safetensors file ({exc_line(e)})') from None
    if meta.get('format') != FORMAT or 'init_kwargs' not in meta:
        raise WeightsError(f'{path}: safetensors file without ganinv generator metadata '
                           f'(format={meta.get("format")!r}); write it with ganinv-convert')
    try:
        init_kwargs = json.loads(meta['init_kwargs'])
    except ValueError:
        raise WeightsError(f'{path}: corrupt init_kwargs metadata') from None
    return init_kwargs, tensors
