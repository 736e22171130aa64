"""Video encoders: torchvision R(2+1)D-18 and a tiny R(2+1)D built from the same blocks.

Input float [B,3,T,H,W] (normalised RGB); output [B,D] after global average pooling.
"""
from __future__ import annotations

from torch import nn
from torchvision.models.video import r2plus1d_18 as tv_r2plus1d_18
from torchvision.models.video.resnet import BasicBlock, Conv2Plus1D


class VideoEncoder(nn.Module):
    def __init__(self, body: nn.Module, out_dim: int):
        super().__init__()
        self.body = body
        self.out_dim = out_dim

    def forward(self, x):  # [B,3,T,H,W] → [B,D]
        return self.body(x)


def r2plus1d_18() -> VideoEncoder:
    """R(2+1)D-18 (Tran et al. 2018), as in XDC and GDT; 512-D features."""
    net = tv_r2plus1d_18(weights=None)
    net.fc = nn.Identity()
    return VideoEncoder(net, 512)


def r2plus1d_tiny(widths: tuple[int, ...] = (16, 32, 64, 128)) -> VideoEncoder:
    """A 4-stage, one-block-per-stage R(2+1)D for 32–64 px clips on CPU."""
    w0 = widths[0]
    layers: list[nn.Module] = [
        nn.Conv3d(3, w0, (1, 3, 3), (1, 2, 2), (0, 1, 1), bias=False),  # spatial stem
        nn.BatchNorm3d(w0),
        nn.ReLU(inplace=True),
        nn.Conv3d(w0, w0, (3, 1, 1), 1, (1, 0, 0), bias=False),  # temporal stem
        nn.BatchNorm3d(w0),
        nn.ReLU(inplace=True),
    ]
    inplanes = w0
    for i, planes in enumerate(widths):
        stride = 1 if i == 0 else 2
        down = None
        if stride != 1 or inplanes != planes:
            down = nn.Sequential(nn.Conv3d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm3d(planes))
        layers.append(BasicBlock(inplanes, planes, Conv2Plus1D, stride, down))
        inplanes = planes
    layers += [nn.AdaptiveAvgPool3d(1), nn.Flatten()]
    return VideoEncoder(nn.Sequential(*layers), widths[-1])
