"""Generator weights: safe NVIDIA pickles, ganinv `.safetensors`, short names + download cache, random nets."""
from ._errors import UnsupportedNetworkError, WeightsError
from ._hub import NETWORKS, cache_dir
from ._load import convert, load_generator, save_generator
from ._random import RANDOM_NETWORKS

__all__ = ['load_generator', 'save_generator', 'convert', 'WeightsError', 'UnsupportedNetworkError', 'NETWORKS',
           'RANDOM_NETWORKS', 'cache_dir']
