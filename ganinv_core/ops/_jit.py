"""Just-in-time build of the kernels (used when the installed `ganinv_core._C` lacks a device's kernels).

One build = one folder `<cache>/<name>-<key>` where `key` hashes the sources and the torch, CUDA and
Python versions, so a changed source or a new torch gets a fresh build and an old one is never reused.
Builds are serialised by a lock file that a killed builder cannot wedge (`BuildLock`), and a failure is
remembered in-process and on disk (`FAILED` in the build folder) so it is not retried on every call;
`GANINV_REBUILD=1` forgets remembered failures. Cache root: `GANINV_CACHE_DIR`, else
`$XDG_CACHE_HOME/ganinv`, else `~/.cache/ganinv`; the builds live under its `kernels/` folder.
"""
import errno
import hashlib
import os
import platform
import socket
import sys
import time
from pathlib import Path

import torch

from . import _linking

try:
    import fcntl
except ImportError:  # Windows: fall back to an O_EXCL lock file with stale-pid detection
    fcntl = None


class BuildError(RuntimeError):
    """A just-in-time kernel build failed now or earlier (one line: what, why, where the log is)."""


_FAILED = {}  # build folder -> remembered failure message (this process)


def cache_root() -> Path:
    """The folder holding the just-in-time builds."""
    base = os.environ.get('GANINV_CACHE_DIR') or os.path.join(
        os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache'), 'ganinv')
    return Path(base) / 'kernels'


def build_key(sources) -> str:
    """16 hex digits over the sources' names and bytes and the toolchain-relevant versions."""
    h = hashlib.sha256()
    for s in sorted(map(Path, sources)):
        h.update(s.name.encode() + b'\0' + s.read_bytes() + b'\0')
    h.update(f'{torch.__version__}|{torch.version.cuda}|{sys.version_info[:2]}|{platform.machine()}'.encode())
    return h.hexdigest()[:16]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class BuildLock:
    """An inter-process lock on `path` that survives its holder being killed.

    With fcntl (POSIX) the lock is an flock on the file: the kernel drops it when the holder dies, so
    a leftover file never blocks. Without fcntl the file is created with O_EXCL and holds
    '<pid> <host>'; a file whose pid is dead on this host is stale and is taken over.

    Args:
        path: the lock file.
        timeout: seconds to wait for a live holder before raising BuildError.
        poll: seconds between attempts.
        use_flock: force the mode (None: flock where available).
    """

    def __init__(self, path, timeout=900.0, poll=0.2, use_flock=None):
        self.path = Path(path)
        self.timeout, self.poll = timeout, poll
        self.use_flock = (fcntl is not None) if use_flock is None else use_flock
        self._fd = None
        self.recovered_stale = False  # set when a dead holder's lock was taken over

    def _holder(self) -> str:
        try:
            return self.path.read_text().strip() or '?'
        except OSError:
            return '?'

    def _try_flock(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return False
            raise
        if os.fstat(fd).st_size:  # a previous holder died (or exited) without cleaning up
            self.recovered_stale = True
        os.ftruncate(fd, 0)
        os.write(fd, f'{os.getpid()} {socket.gethostname()}'.encode())
        self._fd = fd
        return True

    def _try_excl(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            pid, _, host = self._holder().partition(' ')
            if host == socket.gethostname() and pid.isdigit() and not _pid_alive(int(pid)):
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                self.recovered_stale = True
            return False
        os.write(fd, f'{os.getpid()} {socket.gethostname()}'.encode())
        self._fd = fd
        return True

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.timeout
        attempt = self._try_flock if self.use_flock else self._try_excl
        while not attempt():
            if time.monotonic() > deadline:
                raise BuildError(f'ganinv: timed out after {self.timeout:.0f}s waiting for the build lock {self.path} '
                                 f'(held by pid/host {self._holder()}); if no build is running, delete that file')
            time.sleep(self.poll)
        return self

    def __exit__(self, *exc):
        if self.use_flock:
            os.ftruncate(self._fd, 0)  # empty = released cleanly; the file stays (unlinking would race)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
        else:
            os.close(self._fd)
            self.path.unlink(missing_ok=True)
        self._fd = None


def _ninja_build(name, sources, build_dir: Path, with_cuda: bool, verbose: bool):
    """Compile `sources` with torch's ninja driver into `build_dir` and load the library into torch.ops."""
    from torch.utils import cpp_extension
    build_dir.mkdir(parents=True, exist_ok=True)
    (build_dir / "lock").unlink(missing_ok=True)  # torch's own baton: we already hold the real lock
    csrc = str(Path(sources[0]).parent)
    # at::parallel_for is inlined into the kernels: its OpenMP pragmas need -fopenmp (as in setup.py)
    omp = ['-fopenmp'] if sys.platform.startswith('linux') and 'OpenMP' in torch.__config__.parallel_info() else []
    # no libstdc++ of its own exported (a GPU image's g++ links one in): _linking says why and how
    private = _linking.private_link_flags(cpp_extension.get_cxx_compiler(), build_dir)
    cpp_extension.load(name=name, sources=[str(s) for s in sources], build_directory=str(build_dir),
                       extra_include_paths=[csrc], extra_cflags=['-O3'] + omp, extra_ldflags=omp + private,
                       extra_cuda_cflags=['-O3', '--use_fast_math'] if with_cuda else None,
                       with_cuda=with_cuda, is_python_module=False, verbose=verbose)


def build_and_load(name, sources, with_cuda=False, build_fn=None, timeout=900.0, verbose=False):
    """Build (once per key) and load a kernel library, remembering failures.

    Args:
        name: library name, e.g. 'ganinv_cuda'.
        sources: the .cpp/.cu files (headers next to them are hashed via `sources`' folder).
        with_cuda: compile .cu files with nvcc.
        build_fn: `build_fn(name, sources, build_dir, with_cuda, verbose)` that builds and loads;
            default: torch's ninja driver. Tests pass a fake.
        timeout: seconds to wait for another process's build.

    Returns:
        The build folder.

    Raises:
        BuildError: the build failed now, or failed before with the same key (not retried).
    """
    sources = [Path(s) for s in sources]
    headers = sorted(sources[0].parent.glob('*.h'))
    folder = cache_root() / f'{name}-{build_key(sources + headers)}'
    marker = folder / 'FAILED'
    if os.environ.get('GANINV_REBUILD') == '1':
        _FAILED.pop(str(folder), None)
        marker.unlink(missing_ok=True)
    if str(folder) in _FAILED:
        raise BuildError(_FAILED[str(folder)])
    if marker.exists():
        _FAILED[str(folder)] = marker.read_text().splitlines()[0]
        raise BuildError(_FAILED[str(folder)])
    folder.mkdir(parents=True, exist_ok=True)
    with BuildLock(folder / 'lock', timeout=timeout):
        if marker.exists():  # another process failed while we waited
            _FAILED[str(folder)] = marker.read_text().splitlines()[0]
            raise BuildError(_FAILED[str(folder)])
        print(f'ganinv: compiling the {name} kernels into {folder} (once; a minute or two)...',
              file=sys.stderr, flush=True)
        try:
            (build_fn or _ninja_build)(name, sources, folder / 'build', with_cuda, verbose)
        except Exception as e:  # noqa: BLE001 - any failure is reported and remembered
            detail = ' '.join(str(e).split())[:400] or type(e).__name__
            msg = (f'ganinv: building the {name} kernels failed ({type(e).__name__}: {detail}); '
                   f'not retried until the sources or torch change or GANINV_REBUILD=1 (log: {folder / "FAILED"})')
            marker.write_text(msg + '\n\n' + str(e) + '\n')
            _FAILED[str(folder)] = msg
            raise BuildError(msg) from e
    print(f'ganinv: {name} kernels ready.', file=sys.stderr, flush=True)
    return folder
