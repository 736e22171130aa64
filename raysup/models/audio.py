"""Audio encoders on log-mel spectrograms: ResNet-18 (1 input channel) and a tiny ResNet.

Input float [B,1,n_mels,n_frames]; output [B,D].
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models import ResNet, resnet18
from torchvision.models.resnet import BasicBlock


class AudioEncoder(nn.Module):
    def __init__(self, body: nn.Module, out_dim: int):
        super().__init__()
        self.body = body
        self.out_dim = out_dim

    def forward(self, x):  # [B,1,M,F] → [B,D]
        return self.body(x)

    def conv5_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The last conv stage's maps: [B,1,M,F] → [B,C,M',F'] (torchvision's ResNet-18, or the
        tiny ResNet, whose last two modules are the global pooling and flatten)."""
        body = self.body
        if isinstance(body, ResNet):
            x = body.maxpool(body.relu(body.bn1(body.conv1(x))))
            return body.layer4(body.layer3(body.layer2(body.layer1(x))))
        return body[:-2](x)


def resnet18_audio() -> AudioEncoder:
    """ResNet-18 with a 1-channel first layer, as XDC/GDT's audio encoder; 512-D features."""
    net = resnet18(weights=None)
    net.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    net.fc = nn.Identity()
    return AudioEncoder(net, 512)


def resnet_audio_tiny(widths: tuple[int, ...] = (16, 32, 64, 128)) -> AudioEncoder:
    """A 4-stage, one-block-per-stage ResNet for 40-mel spectrograms on CPU."""
    w0 = widths[0]
    layers: list[nn.Module] = [nn.Conv2d(1, w0, 3, 2, 1, bias=False), nn.BatchNorm2d(w0), nn.ReLU(inplace=True)]  # stride-2 stem
    inplanes = w0
    for i, planes in enumerate(widths):
        stride = 1 if i == 0 else 2
        down = None
        if stride != 1 or inplanes != planes:
            down = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        layers.append(BasicBlock(inplanes, planes, stride, down))
        inplanes = planes
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return AudioEncoder(nn.Sequential(*layers), widths[-1])
