"""2-D encoders for single frames, flow stacks and frame-difference stacks.

CaffeNet with BN (Cross and Learn's network; AlexNet layout with batch norm after
every conv and fc6) and VGG16-BN, each with a configurable number of input channels
(3 RGB, 20 = 10 flow frames × (dx, dy), 12 = 4 frame differences × RGB). Input
float [B,C,H,W]; output fc6 after ReLU (+ dropout 0.5 while training): [B,D].
"""
from __future__ import annotations

from torch import nn
from torchvision.models import vgg16_bn as tv_vgg16_bn


class ImageEncoder(nn.Module):
    """``features`` (conv stages, named so hypercolumn heads can tap them) then ``fc6``."""

    def __init__(self, features: nn.Sequential, fc6: nn.Sequential, out_dim: int):
        super().__init__()
        self.features = features
        self.fc6 = fc6
        self.out_dim = out_dim

    def forward(self, x):  # [B,C,H,W] → [B,D]
        return self.fc6(self.features(x))


def _conv(cin: int, cout: int, k: int, s: int = 1, p: int = 0, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, s, p, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _fc6(cin: int, dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(cin, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(inplace=True), nn.Dropout(dropout))


def caffenet_bn(in_channels: int = 3, fc_dim: int = 4096) -> ImageEncoder:
    """CaffeNet (AlexNet, grouped convs) with BN for 227 px input; fc6 features."""
    features = nn.Sequential(
        *_conv(in_channels, 96, 11, 4), nn.MaxPool2d(3, 2),  # conv1, pool1
        *_conv(96, 256, 5, 1, 2, groups=2), nn.MaxPool2d(3, 2),  # conv2, pool2
        *_conv(256, 384, 3, 1, 1),  # conv3
        *_conv(384, 384, 3, 1, 1, groups=2),  # conv4
        *_conv(384, 256, 3, 1, 1, groups=2), nn.MaxPool2d(3, 2),  # conv5, pool5
        nn.AdaptiveAvgPool2d(6),
    )
    return ImageEncoder(features, _fc6(256 * 36, fc_dim, 0.5), fc_dim)


def caffenet_tiny(in_channels: int = 3, fc_dim: int = 256) -> ImageEncoder:
    """CaffeNet's five-conv layout at ~1/8 width with strides for 32–64 px input."""
    features = nn.Sequential(
        *_conv(in_channels, 32, 5, 2, 2), nn.MaxPool2d(2),  # conv1, pool1
        *_conv(32, 64, 3, 1, 1),  # conv2
        *_conv(64, 96, 3, 1, 1),  # conv3
        *_conv(96, 96, 3, 1, 1),  # conv4
        *_conv(96, 64, 3, 1, 1), nn.MaxPool2d(2),  # conv5, pool5
        nn.AdaptiveAvgPool2d(2),
    )
    return ImageEncoder(features, _fc6(64 * 4, fc_dim, 0.5), fc_dim)


def vgg16_bn(in_channels: int = 3, fc_dim: int = 4096) -> ImageEncoder:
    """torchvision VGG16-BN with ``in_channels`` inputs; fc6 features."""
    net = tv_vgg16_bn(weights=None)
    if in_channels != 3:
        net.features[0] = nn.Conv2d(in_channels, 64, 3, 1, 1)
    features = nn.Sequential(*net.features, nn.AdaptiveAvgPool2d(7))
    return ImageEncoder(features, _fc6(512 * 49, fc_dim, 0.5), fc_dim)
