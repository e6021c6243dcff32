"""How the kernel library is linked so that it never exports a libstdc++ of its own.

Some toolchains put libstdc++ into every shared library they link (the GPU image's g++ does, whatever `-l` flags it
is given: the copy it added held 4217 `std::` symbols, the whole library). Exported, that second copy is half used:
each call binds to the process's libstdc++ or to the copy, and formatting a number with the copy's uninitialised
locale crashed an error message on CUDA (and truncated it on the CPU). Kept private, the copy is used whole.

Two steps keep it private, the second only where the first is not enough:

1. `PRIVATE_STATIC_LIBS` (``-Wl,--exclude-libs,ALL``) hides whatever a static *archive* adds;
2. where the copy still shows (it came in as loose objects, which that flag does not cover), a version script
   (`version_script_flags`) exports the module's entry point and nothing else.

`exports_libstdcxx` tells whether a built library exports a copy: setup.py's builder (`checked_build`) checks `_C`
after linking and links it again with step 2 if needed, the just-in-time build probes its compiler first
(`private_link_flags`), and `ganinv-run --doctor` checks the installed `_C`. No torch import here: setup.py loads
this file by path. It also runs as a script (``python _linking.py LIB``: exit 1 when LIB exports a copy, 0 when
not, 2 when it cannot tell).
"""
import ctypes
import subprocess
import sys
import tempfile
from pathlib import Path

LINUX = sys.platform.startswith('linux')
PRIVATE_STATIC_LIBS = ['-Wl,--exclude-libs,ALL'] if LINUX else []

# std::ostream::_M_insert<long>: formats every integer of an error message (where the exported copy crashed). A normal
# build only imports it (libstdc++ instantiates it), so a library that defines and exports it carries a copy.
_PROBE = '_ZNSo9_M_insertIlEERSoT_'

_FORMATS_A_LONG = r"""
#include <cstring>
#include <sstream>
extern "C" int format_long(long n, char* out, int cap) {
  std::ostringstream s;
  s << "n=" << n;
  std::strncpy(out, s.str().c_str(), cap);
  return int(s.str().size());
}
"""


def exports_libstdcxx(path) -> bool | None:
    """Whether the shared library at `path` exports a copy of libstdc++ of its own.

    Compares where dlsym finds `_PROBE` from the library (itself first, then what it loads) with where it finds it
    in libstdc++.so.6. Loads the library (RTLD_LOCAL): a torch extension needs torch imported first. None where this
    cannot be told (not Linux, no libstdc++.so.6, the library does not load).
    """
    if not LINUX:
        return None

    def address(lib):
        return ctypes.cast(getattr(ctypes.CDLL(str(lib)), _PROBE), ctypes.c_void_p).value
    try:
        shared = address('libstdc++.so.6')
    except (OSError, AttributeError):
        return None
    try:
        return address(path) != shared
    except AttributeError:   # neither it nor anything it loads exports one
        return False
    except OSError:
        return None


def version_script_flags(folder, exports=('PyInit_*',)) -> list[str]:
    """Linker flags (a version script written into `folder`) that export only `exports` (glob patterns; default: a
    Python module's entry point) and make every other symbol, a libstdc++ copy's included, local to the library.
    The kernels need nothing else exported: TORCH_LIBRARY registers them from static initialisers. The few statics
    torch's headers would share across libraries (`u` in `nm -D`: the dispatcher's cached reference to its
    singleton, a per-thread `lazy_init_num_threads` flag, an empty hook list) become the library's own; each caches
    a reference to the shared object or guards an idempotent initialisation, so a private copy is harmless (the CPU
    ops tests pass against a `_C` linked this way)."""
    if not LINUX:
        return []
    script = Path(folder) / 'exports.map'
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text('{ global: ' + ' '.join(f'{e};' for e in exports) + ' local: *; };\n')
    return [f'-Wl,--version-script={script}']


def toolchain_leaks(cxx, flags=()) -> bool | None:
    """Whether the C++ driver `cxx`, given ``-shared -fPIC`` + PRIVATE_STATIC_LIBS + `flags`, links a library that
    exports its own libstdc++ (it is built in a temporary folder from a one-function source and checked)."""
    if not LINUX:
        return None
    with tempfile.TemporaryDirectory(prefix='ganinv-link-') as tmp:
        src, lib = Path(tmp) / 'probe.cpp', Path(tmp) / 'libprobe.so'
        src.write_text(_FORMATS_A_LONG)
        try:
            subprocess.run([cxx, '-shared', '-fPIC', '-o', str(lib), str(src), *PRIVATE_STATIC_LIBS, *flags],
                           check=True, capture_output=True, timeout=120)
        except (OSError, subprocess.SubprocessError):
            return None
        return exports_libstdcxx(lib)


def private_link_flags(cxx, folder, exports=('PyInit_*',)) -> list[str]:
    """The link flags for a library built by `cxx`: PRIVATE_STATIC_LIBS, plus a version script (in `folder`,
    exporting `exports`) where the toolchain leaks a libstdc++ copy even so."""
    if toolchain_leaks(cxx):
        return PRIVATE_STATIC_LIBS + version_script_flags(folder, exports)
    return list(PRIVATE_STATIC_LIBS)


def exports_libstdcxx_fresh(path) -> bool:
    """`exports_libstdcxx` in a fresh interpreter (with torch imported): loading a library pins that file in this
    process, so a library linked again at the same path could not be checked again here."""
    code = 'import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name="__main__")'
    return subprocess.run([sys.executable, '-c', code, __file__, str(path)], capture_output=True).returncode == 1


def checked_build(base, exports=exports_libstdcxx_fresh):
    """A setuptools `build_ext` class over `base` (torch's builder) that checks each built library with `exports`
    and, if it exports its own libstdc++ (the copy came in as loose objects, which --exclude-libs misses), links it
    again with `version_script_flags`; if even that fails, it says so loudly (as `ganinv-run --doctor` will)."""
    class BuildExt(base):
        def build_extension(self, ext):
            super().build_extension(ext)
            path = self.get_ext_fullpath(ext.name)
            if not (LINUX and Path(path).exists() and exports(path)):
                return
            print(f'ganinv: {path} exports its own libstdc++ (this compiler links one in); linking it again with a '
                  'version script that keeps the copy private')
            ext.extra_link_args = list(ext.extra_link_args) + version_script_flags(self.build_temp)
            Path(path).unlink()
            super().build_extension(ext)
            if exports(path):
                print(f'ganinv: WARNING: {path} still exports its own libstdc++; an error message from the kernels '
                      'can crash the process. Build with another compiler (CXX=...); see docs/kernels.md')
    return BuildExt


if __name__ == '__main__':
    try:
        import torch  # noqa: F401 - a torch extension resolves its torch symbols from the loaded torch
    except ImportError:
        pass
    found = exports_libstdcxx(sys.argv[1])
    print({True: 'exports its own libstdc++', False: 'no libstdc++ of its own exported', None: 'cannot tell'}[found])
    sys.exit({True: 1, False: 0, None: 2}[found])
