"""ganinv: restore damaged face photos by StyleGAN2 inversion.

Install with torch already present:  pip install --no-build-isolation -e .
(the compiled kernels are built against the torch that is installed; see README).
"""
import glob
import importlib.util
import os
import sys

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _extensions():
    """The compiled ops `ganinv_core._C`: a CppExtension (CPU kernels) where torch has no CUDA, a
    CUDAExtension (CPU + CUDA kernels) where it has CUDA and nvcc. GANINV_NO_EXT=1 skips both."""
    if os.environ.get('GANINV_NO_EXT') == '1':
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension as ce
    except ImportError:
        print('ganinv: torch is not importable at build time; skipping the compiled kernels '
              '(install torch first, then `pip install --no-build-isolation -e .`)')
        return [], {}
    cpp = sorted(glob.glob('csrc/*.cpp'))
    cu = sorted(glob.glob('csrc/*.cu'))
    if not cpp:
        return [], {}
    omp = _openmp_flags(torch)
    common = dict(include_dirs=[os.path.join(HERE, 'csrc')], py_limited_api=False,
                  extra_link_args=omp + _LINKING.PRIVATE_STATIC_LIBS)
    if ce.CUDA_HOME is not None and torch.version.cuda and cu:
        if not os.environ.get('TORCH_CUDA_ARCH_LIST', '').strip():
            os.environ['TORCH_CUDA_ARCH_LIST'] = _default_arch_list()
        print(f"ganinv: building CPU + CUDA kernels for TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']}")
        ext = ce.CUDAExtension('ganinv_core._C', cpp + cu, define_macros=[('GANINV_WITH_CUDA', '1')],
                               extra_compile_args={'cxx': ['-O3'] + omp, 'nvcc': ['-O3', '--use_fast_math']}, **common)
    else:
        print('ganinv: building the CPU kernels only (this torch has no CUDA, or nvcc was not found); '
              'CUDA kernels are compiled just in time on first use on a GPU')
        ext = ce.CppExtension('ganinv_core._C', cpp, extra_compile_args={'cxx': ['-O3'] + omp}, **common)
    return [ext], {'build_ext': _LINKING.checked_build(ce.BuildExtension.with_options(use_ninja=True))}


def _openmp_flags(torch):
    """['-fopenmp'] where torch's CPU parallel backend is OpenMP (Linux gcc/clang): `at::parallel_for` is inlined
    into our kernels, and without the flag its `omp parallel` pragmas are ignored (one thread)."""
    if sys.platform.startswith('linux') and 'OpenMP' in torch.__config__.parallel_info():
        return ['-fopenmp']
    return []


# how _C is linked so that it exports no libstdc++ of its own (a GPU image's g++ adds one); loaded by path: the
# package cannot be imported before it is built
_spec = importlib.util.spec_from_file_location('_ganinv_linking', os.path.join(HERE, 'ganinv_core', 'ops', '_linking.py'))
_LINKING = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_LINKING)


def _default_arch_list():
    """The visible GPUs' compute capabilities, else '8.0;9.0' (A100, H100/H200)."""
    import torch
    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        caps = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
        return ';'.join(f'{major}.{minor}' for major, minor in sorted(caps))
    return '8.0;9.0'


ext_modules, cmdclass = _extensions()

setup(
    name='ganinv',
    version='0.1.0',
    description='Restore damaged face photos by StyleGAN2 inversion',
    long_description=open(os.path.join(HERE, 'README.md'), encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.10',
    packages=find_packages(include=['ganinv_core', 'ganinv_core.*'])
    + find_packages(where='plugins'),
    package_dir={'': '.', **{p: f'plugins/{p.replace(".", "/")}' for p in find_packages(where='plugins')}},
    include_package_data=True,
    package_data={'ganinv_core': ['py.typed']},
    install_requires=[
        'numpy>=1.24',
        'pillow>=10',
        'pluggy>=1.5',
        'safetensors>=0.4',
        'tqdm>=4.66',
        'imageio>=2.31',
        'imageio-ffmpeg>=0.4.9',
        'matplotlib>=3.7',
        'ninja>=1.11',
    ],
    extras_require={
        'test': ['pytest>=8', 'pytest-benchmark>=4', 'scikit-image>=0.22'],
        'align': ['dlib-bin>=19.24', 'face-recognition-models>=0.3'],
    },
    entry_points={
        'console_scripts': [
            'ganinv-run = ganinv_core.cli:main',
            'ganinv-convert = ganinv_core.cli:convert_main',
        ],
        'ganinv': [
            'degradations = ganinv_degradations',
            'losses = ganinv_losses',
            'dlib = ganinv_dlib',
        ],
    },
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
)
