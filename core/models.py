"""Feature extractors and the classifier that joins one to a head.

Every model takes float images in [0, 1], NCHW, normalises them itself (so attacks and uploads
work in pixel space), maps them to a d-dimensional penultimate feature, and classifies that
feature with a softmax or an LGM head.

- ``lenetpp``: LeNet++ of the center-loss and LGM papers (six 5x5 convs 32-32-64-64-128-128 with
  PReLU and max-pooling), with batch norm added so a 2-D bottleneck trains with SGD in few epochs.
- ``resnet``: the CIFAR ResNet of He et al. (6n+2 layers, widths w-2w-4w). The paper used VGG19,
  far too slow for a 2-core CPU; ResNet-8/20 trains in minutes per epoch here and is the
  standard small CIFAR baseline.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .lgm import HEAD_TYPES, LGMHead, SoftmaxHead

NORMALISATION = {  # per-channel mean/std of the training sets
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model before loading its weights."""

    dataset: str
    arch: str
    head: str
    feat_dim: int
    n_classes: int = 10
    in_channels: int = 1
    depth: int = 1  # ResNet blocks per stage (n in 6n+2)
    width: int = 16  # ResNet (and VGG) first-stage width
    alpha: float = 1.0
    lam: float = 0.1
    covariance: str = "identity"

    def to_dict(self) -> dict:
        return asdict(self)


def _conv_bn(cin: int, cout: int, k: int = 5) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.PReLU(cout)]


class LeNetPP(nn.Module):
    """LeNet++: 28x28x1 -> d."""

    def __init__(self, feat_dim: int, in_channels: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn(in_channels, 32), *_conv_bn(32, 32), nn.MaxPool2d(2),
            *_conv_bn(32, 64), *_conv_bn(64, 64), nn.MaxPool2d(2),
            *_conv_bn(64, 128), *_conv_bn(128, 128), nn.MaxPool2d(2))
        self.fc = nn.Linear(128 * 3 * 3, feat_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).flatten(1))


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.short = (nn.Sequential() if stride == 1 and cin == cout else
                      nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.b1(self.c1(x)))
        return F.relu(self.b2(self.c2(out)) + self.short(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 images -> d (global pooling, then a linear layer to d)."""

    def __init__(self, feat_dim: int, depth: int = 1, width: int = 16, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
                                   nn.BatchNorm2d(width), nn.ReLU()]
        cin = width
        for stage, cout in enumerate((width, 2 * width, 4 * width)):
            for block in range(depth):
                layers.append(_Block(cin, cout, 2 if stage > 0 and block == 0 else 1))
                cin = cout
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(cin, feat_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


class ConvNet(nn.Module):
    """A plain VGG-style net (3x3 convs 32-64-128, max-pooling): the clean-label judge's reference
    classifier, deliberately unlike every attacked backbone (LeNet++'s 5x5 stack, ResNet's skips)."""

    def __init__(self, feat_dim: int, in_channels: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn(in_channels, 32, 3), nn.MaxPool2d(2), *_conv_bn(32, 64, 3), nn.MaxPool2d(2),
            *_conv_bn(64, 128, 3), nn.AdaptiveMaxPool2d(2), nn.Flatten())
        self.fc = nn.Linear(128 * 4, feat_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


class VGGNet(nn.Module):
    """VGG-style: three stages of two 3x3 convs (``width``, 2x, 4x channels), max-pooling between,
    global average pooling -> d. A second judge network for CIFAR-10, unlike both the attacked
    ResNets (no skips) and the small ConvNet (twice the depth, ``width`` 64 for 8x its channels)."""

    def __init__(self, feat_dim: int, width: int = 64, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for stage, cout in enumerate((width, 2 * width, 4 * width)):
            layers += [*_conv_bn(cin, cout, 3), *_conv_bn(cout, cout, 3)]
            layers.append(nn.MaxPool2d(2) if stage < 2 else nn.AdaptiveAvgPool2d(1))
            cin = cout
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.fc = nn.Linear(cin, feat_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


class Classifier(nn.Module):
    """Normalise -> feature extractor -> head. ``features`` is the penultimate layer."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        mean, std = NORMALISATION[config.dataset]
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))
        if config.arch == "lenetpp":
            self.extractor: nn.Module = LeNetPP(config.feat_dim, config.in_channels)
        elif config.arch == "resnet":
            self.extractor = CifarResNet(config.feat_dim, config.depth, config.width, config.in_channels)
        elif config.arch == "convnet":
            self.extractor = ConvNet(config.feat_dim, config.in_channels)
        elif config.arch == "vgg":
            self.extractor = VGGNet(config.feat_dim, config.width, config.in_channels)
        else:
            raise ValueError(f"unknown architecture {config.arch!r}")
        if config.head not in HEAD_TYPES:
            raise ValueError(f"unknown head {config.head!r}")
        self.head: SoftmaxHead | LGMHead = HEAD_TYPES[config.head].from_config(config)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.extractor((x - self.mean) / self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def frozen_copy(model: Classifier) -> Classifier:
    """A private eval-mode copy whose weights need no gradient (the shared model is never touched,
    not even its ``requires_grad`` flags), for crafting against it or extracting through it. A
    ResNet's batch norms are folded into its convolutions (eval mode: an exact affine map) and its
    weights kept channels-last: one forward + backward of 25 CIFAR poisons through ResNet-20 takes
    50 ms instead of 90 on the 2-core CPU (bench/bench_bp.py), features agree to 1e-5. LeNet++ is
    left as it is (no difference measured there, BENCHMARKS.md)."""
    frozen = copy.deepcopy(model).eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    if frozen.config.arch == "resnet":
        _fold_batch_norms(frozen.extractor)
        frozen.extractor = frozen.extractor.to(memory_format=torch.channels_last)
    return frozen


def _fold_batch_norms(module: nn.Module) -> None:
    """In place, in eval mode: every convolution followed by a batch norm (a ``_Block``'s pairs, and
    neighbours in a ``Sequential``) becomes one convolution, the norm an identity. By hand rather
    than with ``torch.fx``'s ``fuse``: its tracer patches ``nn.Module.__call__`` for every thread,
    and the lab crafts against both models of a pair at once (a forward in one thread while the
    other traced raised "module is not installed as a submodule")."""
    for m in list(module.modules()):
        if isinstance(m, _Block):
            m.c1, m.b1 = fuse_conv_bn_eval(m.c1, m.b1), nn.Identity()
            m.c2, m.b2 = fuse_conv_bn_eval(m.c2, m.b2), nn.Identity()
        elif isinstance(m, nn.Sequential):
            names = list(m._modules)
            for a, b in zip(names, names[1:]):
                if isinstance(m._modules[a], nn.Conv2d) and isinstance(m._modules[b], nn.BatchNorm2d):
                    m._modules[a], m._modules[b] = fuse_conv_bn_eval(m._modules[a], m._modules[b]), nn.Identity()


def default_config(dataset: str, head: str, feat_dim: int, **overrides) -> ModelConfig:
    """The architecture and LGM defaults used for each dataset (LGM: alpha 1.0 MNIST, 0.3 CIFAR)."""
    if dataset == "cifar10":
        base = dict(arch="resnet", in_channels=3, depth=3, width=16, alpha=0.3, lam=0.1)
    else:
        base = dict(arch="lenetpp", in_channels=1, alpha=1.0, lam=0.1)
    base.update({k: v for k, v in overrides.items() if v is not None})
    return ModelConfig(dataset=dataset, head=head, feat_dim=feat_dim, **base)


def to_input(images: "torch.Tensor | object") -> torch.Tensor:
    """NHWC images -> float NCHW in [0, 1], the models' input convention.

    uint8 images are scaled by 1/255; float images (crafted poisons) are taken as already in [0, 1].
    """
    t = torch.as_tensor(images)
    if t.ndim == 3:
        t = t.unsqueeze(-1)
    t = t.permute(0, 3, 1, 2)
    return t.float().div(255.0) if t.dtype == torch.uint8 else t.float()


@torch.no_grad()
def _batched(model: Classifier, images: np.ndarray, fn: Callable[[torch.Tensor], torch.Tensor], width: int,
             batch_size: int) -> torch.Tensor:
    """The one inference loop: ``fn`` over NHWC images in batches, eval mode (restored after), on
    the model's device, results on the CPU."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = [fn(to_input(images[i:i + batch_size]).to(device)).cpu() for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, width)


def extract_features(model: Classifier, images: np.ndarray, batch_size: int = 512) -> torch.Tensor:
    """Penultimate features of NHWC images (uint8 or float in [0, 1]), in eval mode, on CPU."""
    return _batched(model, images, model.features, model.config.feat_dim, batch_size)


def predict_logits(model: Classifier, images: np.ndarray, batch_size: int = 512) -> torch.Tensor:
    """Inference logits for NHWC images, in eval mode, on CPU."""
    return _batched(model, images, model, model.config.n_classes, batch_size)


def to_images(x: torch.Tensor) -> "object":
    """float NCHW in [0, 1] -> float32 NHWC numpy array (how poisons are stored and shown)."""
    return x.detach().permute(0, 2, 3, 1).contiguous().cpu().numpy().astype("float32")


def pick_device(device: str | None = None) -> torch.device:
    """CUDA when present, else CPU; an explicit choice wins."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
