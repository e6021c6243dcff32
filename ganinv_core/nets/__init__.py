"""Networks: the StyleGAN2 generator (NVIDIA-compatible), the VGG16 perceptual trunk, the ArcFace identity net."""
from .arcface import ArcFaceError, IResNet, load_arcface
from .layers import Conv2dLayer, FullyConnectedLayer, modulated_conv2d, normalize_2nd_moment
from .mapping import MappingNetwork
from .stylegan2 import Generator
from .synthesis import SynthesisBlock, SynthesisLayer, SynthesisNetwork, ToRGBLayer
from .vgg16 import VGG16Error, VGG16Features, load_vgg16

__all__ = ['Generator', 'MappingNetwork', 'SynthesisNetwork', 'SynthesisBlock', 'SynthesisLayer', 'ToRGBLayer',
           'FullyConnectedLayer', 'Conv2dLayer', 'modulated_conv2d', 'normalize_2nd_moment', 'VGG16Features',
           'VGG16Error', 'load_vgg16', 'IResNet', 'ArcFaceError', 'load_arcface']

