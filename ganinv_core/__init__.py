"""ganinv: restore damaged face photos by StyleGAN2 inversion.

The public API is re-exported here; submodules are private unless documented.
"""
__version__ = '0.1.0'
