"""Network definitions (torch, no torchvision): Mobile-FaceRNet (You et al., Sensors 2023), Deep3D ResNet-50.

Both end in the same :class:`CoefficientHead` semantics: one vector in the layout of
``realtime.engines.coeffs.CoefficientLayout``; expression weights leave the network through a sigmoid (the
face model's blendshape weights live in [0, 1]). Inputs are RGB in [0, 1], NCHW; the per-channel
normalisation is part of the network so that the exported ONNX takes plain [0, 1] pixels.
"""

from __future__ import annotations

import torch
from torch import nn

from realtime.engines.coeffs import CoefficientLayout

IMAGE_MEAN = (0.5, 0.45, 0.4)
IMAGE_STD = (0.25, 0.25, 0.25)


class Normalize(nn.Module):
    mean: torch.Tensor
    inv_std: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1))
        self.register_buffer("inv_std", 1.0 / torch.tensor(IMAGE_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * self.inv_std


def conv_bn(
    cin: int,
    cout: int,
    k: int = 3,
    stride: int = 1,
    groups: int = 1,
    dilation: int = 1,
    act: type[nn.Module] | None = nn.ReLU6,
) -> nn.Sequential:
    pad = dilation * (k - 1) // 2
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class OutputActivation(nn.Module):
    """Sigmoid on the expression slice of the coefficient vector, identity elsewhere."""

    def __init__(self, layout: CoefficientLayout) -> None:
        super().__init__()
        s = layout.slices()["expression"]
        self.start, self.stop = s.start, s.stop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [x[:, : self.start], torch.sigmoid(x[:, self.start : self.stop]), x[:, self.stop :]], dim=1
        )


# --------------------------------------------------------------------------- Mobile-FaceRNet


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expansion (factor t), 3x3 depthwise (stride s), linear 1x1 projection."""

    def __init__(self, cin: int, cout: int, stride: int, t: int) -> None:
        super().__init__()
        hidden = cin * t
        layers: list[nn.Module] = []
        if t != 1:
            layers.append(conv_bn(cin, hidden, 1))
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden), conv_bn(hidden, cout, 1, act=None)]
        self.block = nn.Sequential(*layers)
        self.use_skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_skip else y


class DepthwiseResidualUnit(nn.Module):
    """Residual unit of the attention soft-mask branch (depthwise-separable to keep the module light)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(c, c, 3, groups=c, act=nn.ReLU), conv_bn(c, c, 1, act=None))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class ResidualAttention(nn.Module):
    """H = (1 + G(x)) · F(x): trunk F is a 1x1 conv to half the channels; the soft mask G is two residual
    units and a sigmoid (paper Fig. 3, Eq. 9). The output has half the input's channels."""

    def __init__(self, c: int) -> None:
        super().__init__()
        half = max(c // 2, 1)
        self.trunk = conv_bn(c, half, 1, act=nn.ReLU)
        self.mask = nn.Sequential(
            conv_bn(c, half, 1, act=nn.ReLU),
            DepthwiseResidualUnit(half),
            DepthwiseResidualUnit(half),
            nn.Conv2d(half, half, 1),
            nn.Sigmoid(),
        )
        self.out_channels = half

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (1.0 + self.mask(x)) * self.trunk(x)


class BasicResidual(nn.Module):
    """One 3x3 conv with a skip connection (the 'ResNet module' of the feature extraction unit)."""

    def __init__(self, c: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv = conv_bn(c, c, 3, dilation=dilation, act=None)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.conv(x))


class FeatureUnit(nn.Module):
    """1x1 conv, then three 3x3 ResNet modules, the middle one atrous (dilation 3): receptive field 11."""

    def __init__(self, cin: int, c: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn(cin, c, 1, act=nn.ReLU), BasicResidual(c), BasicResidual(c, dilation=3), BasicResidual(c)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class DenseFeatureExtractor(nn.Module):
    """Paper Sec. 3.2: two 3x3 convs (8 channels), then densely connected feature units; the output is the
    concatenation of the stem and every unit (multi-scale fusion). Five units give the paper's receptive
    field of 51 pixels."""

    def __init__(self, units: int = 5, c: int = 8, stride: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, c, 3, stride, act=nn.ReLU), conv_bn(c, c, 3, act=nn.ReLU))
        self.units = nn.ModuleList([FeatureUnit(c * (i + 1), c) for i in range(units)])
        self.out_channels = c * (units + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [self.stem(x)]
        for unit in self.units:
            feats.append(unit(torch.cat(feats, dim=1)))
        return torch.cat(feats, dim=1)


MOBILE_FACERNET_TABLE1: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
"""(t, c, n, s) of layers 1–7 (paper Table 1)."""


class MobileFaceRNet(nn.Module):
    """Dense multi-scale front end → MobileNetV2 (Table 1) with a residual-attention module after each of
    the seven layers → 1x1 conv 1280 → global average pool → FC to the coefficient vector.

    ``front_stride=2`` moves Table 1's stride-2 from the first backbone conv to the first front-end conv:
    the same output resolutions, a quarter of the front end's cost (the full-resolution 8-channel convs
    are 3/4 of the CPU latency at 64x64) and twice its receptive field in input pixels. ``front_stride=1``
    is the paper's exact layout.
    """

    def __init__(
        self,
        layout: CoefficientLayout | None = None,
        input_size: int = 64,
        units: int = 5,
        attention: bool = True,
        front_stride: int = 2,
    ) -> None:
        super().__init__()
        self.layout = layout or CoefficientLayout()
        self.input_size = input_size
        self.normalize = Normalize()
        self.front = DenseFeatureExtractor(units, stride=front_stride)
        layers: list[nn.Module] = [conv_bn(self.front.out_channels, 32, 3, 3 - front_stride)]
        cin = 32
        for t, c, n, s in MOBILE_FACERNET_TABLE1:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
            if attention:
                ra = ResidualAttention(cin)
                layers.append(ra)
                cin = ra.out_channels
        layers.append(conv_bn(cin, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(1280, self.layout.size)
        self.out_act = OutputActivation(self.layout)
        nn.init.normal_(self.fc.weight, std=1e-3)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.features(self.front(self.normalize(x)))
        return self.out_act(self.fc(torch.flatten(self.pool(y), 1)))


# --------------------------------------------------------------------------- Deep3D (ResNet-50)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != out:
            self.downsample = nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + identity)


class ResNet50Backbone(nn.Module):
    """ResNet-50 up to the global pool (module names follow the usual ResNet layout, which the Deep3D
    checkpoint importer maps onto). ``width`` 64 is the standard network; 32 is the CPU-trained one."""

    def __init__(self, width: int = 64, blocks: tuple[int, int, int, int] = (3, 4, 6, 3)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = width
        stages = []
        for i, n in enumerate(blocks):
            planes = width * 2**i
            stage = []
            for j in range(n):
                stage.append(Bottleneck(cin, planes, 2 if (j == 0 and i > 0) else 1))
                cin = planes * Bottleneck.expansion
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.out_channels = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


class Deep3DNet(nn.Module):
    """Deng et al. 2019: ResNet-50 regressing the coefficient vector (here in the project's layout)."""

    def __init__(
        self,
        layout: CoefficientLayout | None = None,
        input_size: int = 224,
        width: int = 64,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        self.layout = layout or CoefficientLayout()
        self.input_size = input_size
        self.normalize: nn.Module = Normalize() if normalize else nn.Identity()
        self.backbone = ResNet50Backbone(width)
        self.fc = nn.Linear(self.backbone.out_channels, self.layout.size)
        self.out_act = OutputActivation(self.layout)
        nn.init.normal_(self.fc.weight, std=1e-3)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_act(self.fc(self.backbone(self.normalize(x))))


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def count_flops(net: nn.Module, input_size: int) -> float:
    """Multiply–accumulates ×2 of the convolutions and linear layers for one image (GFLOPs)."""
    total = 0.0
    hooks = []

    def conv_hook(m: nn.Conv2d, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total += 2.0 * out.numel() * k

    def lin_hook(m: nn.Linear, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        total += 2.0 * out.numel() * m.in_features

    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(lin_hook))
    was_training = net.training
    net.eval()
    with torch.no_grad():
        net(torch.zeros(1, 3, input_size, input_size))
    net.train(was_training)
    for h in hooks:
        h.remove()
    return total / 1e9
