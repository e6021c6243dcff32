"""Outputs out: atomic files, and per-target folders that appear complete or not at all.

A target's files are written into a hidden staging folder beside its final place, then the folder is
renamed into place; an interrupted run (Ctrl-C) leaves only finished targets and no half-written file.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image


class OutputExistsError(ValueError):
    """An output would replace existing files and ``--overwrite`` was not given."""


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.stem}.', suffix=f'.tmp{path.suffix}')
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_png(path: str | Path, img: np.ndarray) -> None:
    """uint8 (H, W, 3|1) or (H, W) -> PNG, atomically."""
    buf = io.BytesIO()
    Image.fromarray(img.squeeze(-1) if img.ndim == 3 and img.shape[2] == 1 else img).save(buf, format='PNG')
    write_bytes(path, buf.getvalue())


def _jsonable(x):
    """Non-finite floats become the strings "inf", "-inf", "nan" (strict JSON has no such numbers)."""
    if isinstance(x, float) and not math.isfinite(x):
        return 'nan' if math.isnan(x) else ('inf' if x > 0 else '-inf')
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    return x


def write_json(path: str | Path, obj) -> None:
    """Strict, indented JSON (non-finite floats as strings), atomically."""
    write_bytes(path, (json.dumps(_jsonable(obj), indent=2, allow_nan=False) + '\n').encode())


def write_npz(path: str | Path, arrays: dict) -> None:
    """``{name: array}`` -> an uncompressed ``.npz``, atomically."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_bytes(path, buf.getvalue())


def check_free(outdir: str | Path, names: list[str], overwrite: bool) -> None:
    """Refuse (before any work) an output folder that cannot be made, or to replace ``run.json``, ``metrics.csv`` or
    any target folder unless ``overwrite``."""
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise OutputExistsError(f'{outdir}: exists and is not a folder')
    base = next(p for p in (outdir.absolute(), *outdir.absolute().parents) if p.exists())
    if not base.is_dir() or not os.access(base, os.W_OK | os.X_OK):
        raise OutputExistsError(f'{outdir}: cannot be created: {base} is '
                                f'{"not a folder" if not base.is_dir() else "not writable"}')
    if overwrite:
        return
    taken = [n for n in ['run.json', 'metrics.csv', *names] if (outdir / n).exists()]
    if taken:
        raise OutputExistsError(f'{outdir / taken[0]}: already exists; pass --overwrite to replace '
                                f'{"it" if len(taken) == 1 else f"it and {len(taken) - 1} more"}')


@contextlib.contextmanager
def target_folder(outdir: str | Path, name: str):
    """Yield a staging folder for target ``name``; on success it becomes ``outdir/name`` (replacing an old one),
    on any error (Ctrl-C included) it is deleted and an existing ``outdir/name`` is left as it was."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=outdir, prefix=f'.{name}.partial-'))
    final = outdir / name
    try:
        yield stage
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(dir=outdir, prefix=f'.{name}.old-'))
            os.replace(final, old / 'x')
        os.replace(stage, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
