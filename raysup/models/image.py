"""2-D encoders for single frames, flow stacks and frame-difference stacks.

CaffeNet with BN (Cross and Learn's network: AlexNet layout with "batch normalization on all
convolutional layers", §4 of the paper; none on the fc layers) and VGG16-BN, each with a
configurable number of input channels (3 RGB, 20 = 10 flow frames × (dx, dy), 12 = 4 frame
differences × RGB). Input float [B,C,H,W]; output fc6 after ReLU: [B,D]. Dropout (0.5 while
training) acts on fc6's input, as in the official code's CaffeNet_BN (Dropout → fc6 → ReLU), so
the features that enter the loss are not dropped out.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
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
    """The paper networks' fc6: dropout on its input, no normalisation (official CaffeNet_BN)."""
    return nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin, dim), nn.ReLU(inplace=True))


def _fc6_bn(cin: int, dim: int, dropout: float) -> nn.Sequential:
    """The tiny net's fc6: BN and dropout after it (measured on the embedded set, docs/results.md)."""
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
    """CaffeNet's five-conv layout at 1/16 width (conv5: 32 channels) with strides for 32–64 px
    input: a step of both Cross and Learn streams costs ~1/3 of the 1/8-width net's, which
    learned more per step but not per CPU second (docs/results.md)."""
    features = nn.Sequential(
        *_conv(in_channels, 16, 5, 2, 2), nn.MaxPool2d(2),  # conv1, pool1
        *_conv(16, 32, 3, 1, 1),  # conv2
        *_conv(32, 48, 3, 1, 1),  # conv3
        *_conv(48, 48, 3, 1, 1),  # conv4
        *_conv(48, 32, 3, 1, 1), nn.MaxPool2d(2),  # conv5, pool5
        nn.AdaptiveAvgPool2d(2),
    )
    return ImageEncoder(features, _fc6_bn(32 * 4, fc_dim, 0.5), fc_dim)


def vgg16_bn(in_channels: int = 3, fc_dim: int = 4096) -> ImageEncoder:
    """torchvision VGG16-BN (BN after every conv) with ``in_channels`` inputs; fc6 features."""
    net = tv_vgg16_bn(weights=None)
    if in_channels != 3:
        net.features[0] = nn.Conv2d(in_channels, 64, 3, 1, 1)
    features = nn.Sequential(*net.features, nn.AdaptiveAvgPool2d(7))
    return ImageEncoder(features, _fc6(512 * 49, fc_dim, 0.5), fc_dim)


# --- Cross-pixel flow similarity (Mahendran et al. 2018): AlexNet with parameter-free BN and a
# sparse hypercolumn head. ---------------------------------------------------------------------

HYPERCOLUMN_TAPS = ("conv1", "pool1", "conv3", "pool5", "fc7")


def _same_conv(cin: int, cout: int, k: int, s: int = 1) -> nn.Sequential:
    """Conv padded by k//2 + parameter-free BN (affine=False; folded away by
    :func:`fold_batchnorm`) + ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout, affine=False), nn.ReLU(inplace=True))


class AlexNetHypercolumn(nn.Module):
    """AlexNet as named fully convolutional stages conv1, pool1, conv2, pool2, conv3, conv4,
    conv5, pool5, fc6, fc7 (fc6/fc7 as 3×3 and 1×1 convs). The padding is adapted so that
    every map tiles the image exactly (stride s → ⌈H/s⌉ cells, each s pixels wide), so a pixel
    maps to the same relative position in every map. The head (the paper's sparse
    hypercolumns) bilinearly samples the :data:`HYPERCOLUMN_TAPS` maps at N pixels,
    concatenates them and applies an MLP with one hidden layer."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], kernels: tuple[int, ...], conv1_stride: int, hidden: int, out_dim: int):
        super().__init__()
        c1, c2, c3, c4, c5, c6, c7 = widths
        k1, k2, k3, k6 = kernels
        pool = lambda: nn.MaxPool2d(3, 2, 1)  # noqa: E731  ⌈H/2⌉ cells
        self.stages = nn.ModuleDict({
            "conv1": _same_conv(in_channels, c1, k1, conv1_stride), "pool1": pool(),
            "conv2": _same_conv(c1, c2, k2), "pool2": pool(),
            "conv3": _same_conv(c2, c3, k3),
            "conv4": _same_conv(c3, c4, k3),
            "conv5": _same_conv(c4, c5, k3), "pool5": pool(),
            "fc6": _same_conv(c5, c6, k6),
            "fc7": _same_conv(c6, c7, 1),
        })  # fmt: skip
        self.pool5_dim = c5
        self.head = nn.Sequential(nn.Linear(c1 + c1 + c3 + c5 + c7, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))

    def feature_maps(self, x: torch.Tensor, upto: str = "fc7") -> dict[str, torch.Tensor]:
        """[B,C,H,W] → {stage: [B,C_s,H_s,W_s]} for every stage up to ``upto``."""
        maps = {}
        for name, stage in self.stages.items():
            x = maps[name] = stage(x)
            if name == upto:
                break
        return maps

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Image features for evaluation: pool5 averaged over space, [B,C,H,W] → [B,C5]."""
        return self.feature_maps(x, upto="pool5")["pool5"].mean(dim=(2, 3))

    def forward(self, x: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Images [B,C,H,W] and pixel positions [B,N,2] (:func:`pixel_centres`) → head
        outputs [B,N,out_dim]."""
        return self.head_at(self.feature_maps(x), points)

    def head_at(self, maps: dict[str, torch.Tensor], points: torch.Tensor) -> torch.Tensor:
        """The head on the hypercolumns of ``maps`` at ``points`` [B,N,2] → [B,N,out_dim]."""
        return self.head(sample_hypercolumns([maps[t] for t in HYPERCOLUMN_TAPS], points))

    def dense(self, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """Head outputs at every pixel, ``chunk`` pixels at a time: [B,C,H,W] → [B,H,W,out_dim]."""
        b, _, h, w = x.shape
        maps = self.feature_maps(x)
        points = pixel_centres(torch.arange(h * w, device=x.device).expand(b, -1), h, w)  # [B,H·W,2]
        out = torch.cat([self.head_at(maps, points[:, s : s + chunk]) for s in range(0, h * w, chunk)], dim=1)  # [B,H·W,out]
        return out.reshape(b, h, w, -1)


def sample_hypercolumns(maps: list[torch.Tensor], points: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of feature maps [B,C_i,H_i,W_i], each covering the whole image, at
    ``points`` [B,N,2] ((x, y) in [−1, 1], ``grid_sample``'s align_corners=False convention;
    edges clamp) → concatenated hypercolumns [B,N,ΣC_i]."""
    grid = points[:, None].to(maps[0].dtype)  # [B,1,N,2]
    cols = [F.grid_sample(m, grid, mode="bilinear", padding_mode="border", align_corners=False)[:, :, 0] for m in maps]  # [B,C_i,N]
    return torch.cat(cols, dim=1).transpose(1, 2)  # [B,N,ΣC]


def pixel_centres(index: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Flat pixel indices [B,N] of an H×W image → their centres as (x, y) in [−1, 1] [B,N,2]."""
    y, x = index // width, index % width
    return torch.stack([(2 * x + 1) / width - 1, (2 * y + 1) / height - 1], dim=-1).float()


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` where every BatchNorm2d that directly follows a Conv2d in
    a Sequential is folded into that conv (torch's ``fuse_conv_bn_eval``) and replaced by an
    Identity: the same function with plain convs, for export and evaluation."""
    model = copy.deepcopy(model).eval()
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            if isinstance(seq[i], nn.Conv2d) and isinstance(seq[i + 1], nn.BatchNorm2d):
                seq[i], seq[i + 1] = fuse_conv_bn_eval(seq[i], seq[i + 1]), nn.Identity()
    return model


def alexnet_hypercolumn(in_channels: int = 3, out_dim: int = 16, hidden: int = 1024) -> AlexNetHypercolumn:
    """The paper's network: AlexNet widths (96, 256, 384, 384, 256, fc 4096, 4096), 11×11/4
    conv1; hypercolumns of 96+96+384+256+4096 channels → ``hidden`` → ``out_dim``."""
    return AlexNetHypercolumn(in_channels, (96, 256, 384, 384, 256, 4096, 4096), (11, 5, 3, 3), 4, hidden, out_dim)


def alexnet_hypercolumn_tiny(in_channels: int = 3, out_dim: int = 16, hidden: int = 128) -> AlexNetHypercolumn:
    """The same layout at ~1/3–1/32 width with a stride-1 5×5 conv1 for 32–64 px input."""
    return AlexNetHypercolumn(in_channels, (32, 64, 96, 96, 64, 128, 128), (5, 3, 3, 3), 2, hidden, out_dim)
