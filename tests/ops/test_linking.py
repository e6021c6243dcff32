"""`_linking`: the kernel library never exports a libstdc++ of its own. Each way a toolchain can add a static copy is
reproduced with this machine's compiler (`-static-libstdc++`: an archive; the whole libstdc++.a turned into one
loose object, as a GPU image's g++ adds it) and each must be detected and then kept private by the project's flags.
Exported, such a copy truncated an error message on the CPU and crashed the process on CUDA.

The driver-level tests run twice: with this machine's C++ driver and with a driver that adds the loose copy to every
link, as the GPU image's does, so that they hold (and are checked) on both kinds of machine."""
import ctypes
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ganinv_core import ops
from ganinv_core.ops import _jit, _linking

pytestmark = pytest.mark.skipif(not sys.platform.startswith('linux'), reason='ELF shared libraries (glibc dlsym)')


@pytest.fixture(scope='module')
def system_cxx():
    found = shutil.which(os.environ.get('CXX', 'c++'))
    if found is None:
        pytest.skip('no C++ compiler')
    return found


@pytest.fixture(scope='module')
def loose_libstdcxx(system_cxx, tmp_path_factory):
    """The whole of libstdc++.a as one relocatable object: linked in, it is no archive, so --exclude-libs misses it."""
    archive = subprocess.run([system_cxx, '-print-file-name=libstdc++.a'], capture_output=True, text=True).stdout
    if not os.path.isabs(archive.strip()) or shutil.which('ld') is None:
        pytest.skip('no libstdc++.a or no ld to turn it into an object')
    obj = tmp_path_factory.mktemp('loose') / 'libstdcxx_whole.o'
    subprocess.run(['ld', '-r', '--whole-archive', archive.strip(), '-o', str(obj)], check=True)
    return obj


def _leaky_driver(folder, cxx, loose):
    """A C++ driver that links `loose` (a libstdc++ copy) into everything, like the GPU image's g++."""
    driver = Path(folder) / 'leaky-c++'
    driver.write_text(f'#!/bin/sh\nexec "{cxx}" "$@" "{loose}"\n')
    driver.chmod(driver.stat().st_mode | stat.S_IXUSR)
    return str(driver)


@pytest.fixture(scope='module', params=['this-machine', 'leaky'])
def cxx(request, system_cxx, loose_libstdcxx, tmp_path_factory):
    if request.param == 'this-machine':
        return system_cxx
    return _leaky_driver(tmp_path_factory.mktemp('driver'), system_cxx, loose_libstdcxx)


def _link(cxx, folder, name, *flags):
    (folder / 'f.cpp').write_text(_linking._FORMATS_A_LONG)
    lib = folder / f'lib{name}.so'
    subprocess.run([cxx, '-shared', '-fPIC', '-o', str(lib), str(folder / 'f.cpp'), *flags], check=True)
    return lib


def _project_flags(cxx, folder):
    """What the project links a library with on `cxx` (private_link_flags), exporting the test's function."""
    return _linking.private_link_flags(cxx, folder, exports=('format_long',))


def _formats(lib):
    fmt, buf = ctypes.CDLL(str(lib)).format_long, ctypes.create_string_buffer(32)
    fmt.argtypes = [ctypes.c_long, ctypes.c_char_p, ctypes.c_int]
    return fmt(-1234567, buf, 32), buf.value


def test_a_library_linked_the_project_s_way_exports_no_copy(cxx, tmp_path):
    lib = _link(cxx, tmp_path, 'plain', *_project_flags(cxx, tmp_path))
    assert _linking.exports_libstdcxx(lib) is False
    assert _formats(lib) == (10, b'n=-1234567')


def test_a_static_archive_copy_is_detected_and_kept_private(cxx, tmp_path):
    assert _linking.exports_libstdcxx(_link(cxx, tmp_path, 'exported', '-static-libstdc++')) is True
    lib = _link(cxx, tmp_path, 'private', '-static-libstdc++', *_project_flags(cxx, tmp_path))
    assert _linking.exports_libstdcxx(lib) is False
    assert _formats(lib) == (10, b'n=-1234567')   # the private copy is used whole: the number is all there


def test_exclude_libs_alone_keeps_an_archive_copy_private(system_cxx, tmp_path):
    if _linking.toolchain_leaks(system_cxx):
        pytest.skip("this machine's driver adds a copy of its own (the leaky-driver cases cover it)")
    lib = _link(system_cxx, tmp_path, 'private', '-static-libstdc++', *_linking.PRIVATE_STATIC_LIBS)
    assert _linking.exports_libstdcxx(lib) is False and _formats(lib) == (10, b'n=-1234567')


def test_a_loose_object_copy_needs_the_version_script(system_cxx, tmp_path, loose_libstdcxx):
    leaky = _link(system_cxx, tmp_path, 'loose', str(loose_libstdcxx), *_linking.PRIVATE_STATIC_LIBS)
    assert _linking.exports_libstdcxx(leaky) is True   # --exclude-libs covers archives only
    script = _linking.version_script_flags(tmp_path, exports=('format_long',))
    lib = _link(system_cxx, tmp_path, 'scripted', str(loose_libstdcxx), *_linking.PRIVATE_STATIC_LIBS, *script)
    assert _linking.exports_libstdcxx(lib) is False
    assert _formats(lib) == (10, b'n=-1234567')
    assert subprocess.run(['nm', '-D', '--defined-only', str(lib)], capture_output=True, text=True,
                          check=True).stdout.split()[-1:] == ['format_long']   # the one name asked for


def test_the_jit_build_probes_its_compiler(system_cxx, tmp_path, loose_libstdcxx, monkeypatch):
    """A driver that adds libstdc++ as a loose object gets the version script, and the script is enough. The
    just-in-time build asks with the compiler torch's ninja file uses (CXX)."""
    driver = _leaky_driver(tmp_path, system_cxx, loose_libstdcxx)
    assert _linking.toolchain_leaks(driver) is True
    flags = _linking.private_link_flags(driver, tmp_path / 'build')
    assert flags[:-1] == _linking.PRIVATE_STATIC_LIBS and flags[-1].startswith('-Wl,--version-script=')
    assert (tmp_path / 'build' / 'exports.map').read_text() == '{ global: PyInit_*; local: *; };\n'
    assert _linking.toolchain_leaks(driver, flags[-1:]) is False
    assert _linking.toolchain_leaks(str(tmp_path / 'no-such-c++')) is None

    seen = {}
    from torch.utils import cpp_extension
    monkeypatch.setenv('CXX', driver)
    monkeypatch.setattr(cpp_extension, 'load', lambda **kw: seen.update(kw))
    _jit._ninja_build('k', [tmp_path / 'k.cpp'], tmp_path / 'jit', with_cuda=False, verbose=False)
    assert [f for f in seen['extra_ldflags'] if f != '-fopenmp'] == flags[:-1] + [
        f'-Wl,--version-script={tmp_path / "jit" / "exports.map"}']


def test_setup_py_s_builder_links_again_where_a_copy_shows(cxx, tmp_path, capsys):
    """`checked_build` over a stand-in for torch's builder that links with `cxx`: the library it leaves exports no
    copy with either driver, linked once by this machine's (if it adds no copy), twice (the second time with the
    version script) by the leaky one."""
    links = []

    class Base:   # what setuptools' build_ext offers the subclass
        build_temp = str(tmp_path / 'temp')

        def get_ext_fullpath(self, name):
            return str(tmp_path / f'lib{name}.so')

        def build_extension(self, ext):
            links.append(list(ext.extra_link_args))
            _link(cxx, tmp_path, ext.name, *ext.extra_link_args)

    leaks = _linking.toolchain_leaks(cxx)
    assert leaks is not None and (leaks or not cxx.endswith('leaky-c++'))
    ext = type('Ext', (), {'name': 'C', 'extra_link_args': list(_linking.PRIVATE_STATIC_LIBS)})()
    _linking.checked_build(Base)().build_extension(ext)
    assert _linking.exports_libstdcxx_fresh(tmp_path / 'libC.so') is False
    script = f'-Wl,--version-script={tmp_path / "temp" / "exports.map"}'
    assert links == ([_linking.PRIVATE_STATIC_LIBS, _linking.PRIVATE_STATIC_LIBS + [script]] if leaks
                     else [_linking.PRIVATE_STATIC_LIBS])
    assert ('linking it again with a version script' in capsys.readouterr().out) == leaks
    setup_py = (Path(__file__).resolve().parents[2] / 'setup.py').read_text()
    assert '_LINKING.checked_build(ce.BuildExtension' in setup_py and '_LINKING.PRIVATE_STATIC_LIBS' in setup_py


def test_the_installed_extension_exports_no_copy(monkeypatch):
    import ganinv_core._C as c
    assert _linking.exports_libstdcxx(c.__file__) is False
    assert 'own (static) copy of libstdc++' not in ops.doctor_report()
    monkeypatch.setattr(_linking, 'exports_libstdcxx', lambda path: True)
    assert 'own (static) copy of libstdc++' in ops.doctor_report()


def test_the_module_runs_as_a_check(cxx, tmp_path):
    """`python _linking.py LIB` exits 1 when LIB exports a copy, 0 when not, 2 when it cannot tell."""
    def code(lib):
        return subprocess.run([sys.executable, _linking.__file__, str(lib)], capture_output=True).returncode
    assert code(_link(cxx, tmp_path, 'x', '-static-libstdc++')) == 1
    assert code(_link(cxx, tmp_path, 'y', *_project_flags(cxx, tmp_path))) == 0
    assert code(tmp_path / 'missing.so') == 2


def test_what_cannot_be_told_is_said_so(tmp_path, monkeypatch, capsys):
    """The fallbacks: no library, no compiler, a relink that does not help, a system that is not Linux."""
    assert _linking.exports_libstdcxx(tmp_path / 'missing.so') is None        # does not load
    nothing = str(tmp_path / 'no-such-c++')
    assert _linking.toolchain_leaks(nothing) is None                           # cannot link: no version script
    assert _linking.private_link_flags(nothing, tmp_path) == _linking.PRIVATE_STATIC_LIBS

    links = []

    class Base:
        build_temp = str(tmp_path / 'temp')

        def get_ext_fullpath(self, name):
            return str(tmp_path / f'lib{name}.so')

        def build_extension(self, ext):
            links.append(list(ext.extra_link_args))
            (tmp_path / f'lib{ext.name}.so').write_bytes(b'')

    ext = type('Ext', (), {'name': 'C', 'extra_link_args': []})()
    _linking.checked_build(Base, exports=lambda path: True)().build_extension(ext)   # the copy stays exported
    out = capsys.readouterr().out
    assert len(links) == 2 and 'WARNING' in out and 'still exports its own libstdc++' in out

    monkeypatch.setattr(_linking, 'LINUX', False)
    links.clear()
    _linking.checked_build(Base, exports=lambda path: True)().build_extension(ext)   # not checked off Linux
    assert len(links) == 1
    assert _linking.exports_libstdcxx(tmp_path / 'libC.so') is None and _linking.toolchain_leaks('c++') is None
    assert _linking.version_script_flags(tmp_path) == []
