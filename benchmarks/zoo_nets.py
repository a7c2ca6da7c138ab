"""Plain ``torch.nn`` versions of the CNN families and recurrent models of the zoo (torchvision needs another
torch): each built from its family's characteristic block, small (a few hundred thousand parameters), random.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


def _cbr(cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1, act: Any = nn.ReLU) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), act())


def _randomize_bn(m: nn.Module) -> nn.Module:
    """Give BatchNorm layers non-trivial statistics (a trained network's are never 0/1)."""
    g = torch.Generator().manual_seed(1)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            c = mod.num_features
            mod.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
            mod.weight.data.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
            mod.bias.data.copy_(torch.randn(c, generator=g) * 0.1)
    return m.eval()


class _Classifier(nn.Module):
    def __init__(self, features: nn.Module, width: int, classes: int = 100) -> None:
        super().__init__()
        self.features, self.fc = features, nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


class _Basic(nn.Module):  # ResNet basic block
    def __init__(self, cin: int, cout: int, s: int) -> None:
        super().__init__()
        self.a, self.b = _cbr(cin, cout, 3, s), _cbr(cout, cout, 3, 1, act=nn.Identity)
        self.skip = nn.Identity() if cin == cout and s == 1 else _cbr(cin, cout, 1, s, act=nn.Identity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.b(self.a(x)) + self.skip(x))


def resnet() -> nn.Module:
    torch.manual_seed(0)
    f = nn.Sequential(_cbr(3, 32, 3, 2), _Basic(32, 32, 1), _Basic(32, 64, 2), _Basic(64, 128, 2), _Basic(128, 128, 1))
    return _randomize_bn(_Classifier(f, 128))


class _SE(nn.Module):
    def __init__(self, c: int, r: int = 4, gate: Any = nn.Sigmoid) -> None:
        super().__init__()
        self.a, self.b, self.gate = nn.Conv2d(c, max(8, c // r), 1), nn.Conv2d(max(8, c // r), c, 1), gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.b(F.relu(self.a(F.adaptive_avg_pool2d(x, 1)))))


class _Inverted(nn.Module):  # MobileNetV2 / V3 / EfficientNet MBConv
    def __init__(self, cin: int, cout: int, s: int, e: int = 4, act: Any = nn.ReLU6, se: bool = False) -> None:
        super().__init__()
        h = cin * e
        layers = [_cbr(cin, h, 1, act=act), _cbr(h, h, 3, s, groups=h, act=act)]
        if se:
            layers.append(_SE(h))
        layers.append(_cbr(h, cout, 1, act=nn.Identity))
        self.body, self.res = nn.Sequential(*layers), cin == cout and s == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.res else y


def _mbnet(act: Any, se: bool, width: int = 256) -> nn.Module:
    torch.manual_seed(0)
    f = nn.Sequential(
        _cbr(3, 16, 3, 2, act=act), _Inverted(16, 24, 2, act=act, se=se), _Inverted(24, 24, 1, act=act, se=se),
        _Inverted(24, 48, 2, act=act, se=se), _Inverted(48, 64, 2, act=act, se=se), _Inverted(64, 64, 1, act=act, se=se),
        _cbr(64, width, 1, act=act),
    )  # fmt: skip
    return _randomize_bn(_Classifier(f, width))


def mobilenet_v2() -> nn.Module:
    return _mbnet(nn.ReLU6, se=False)


def mobilenet_v3() -> nn.Module:
    return _mbnet(nn.Hardswish, se=True)


def efficientnet() -> nn.Module:
    return _mbnet(nn.SiLU, se=True, width=320)


class _Shuffle(nn.Module):  # ShuffleNetV2 unit (stride 1: split, branch, concat, channel shuffle)
    def __init__(self, c: int) -> None:
        super().__init__()
        h = c // 2
        self.b = nn.Sequential(_cbr(h, h, 1), _cbr(h, h, 3, groups=h, act=nn.Identity), _cbr(h, h, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        y = torch.cat([a, self.b(b)], 1)
        n, c, hh, ww = y.shape
        return y.view(n, 2, c // 2, hh, ww).transpose(1, 2).reshape(n, c, hh, ww)


def shufflenet() -> nn.Module:
    torch.manual_seed(0)
    f = nn.Sequential(
        _cbr(3, 64, 3, 2), nn.MaxPool2d(2), _Shuffle(64), _cbr(64, 128, 3, 2), _Shuffle(128), _Shuffle(128)
    )
    return _randomize_bn(_Classifier(f, 128))


class _Fire(nn.Module):  # SqueezeNet
    def __init__(self, cin: int, s: int, e: int) -> None:
        super().__init__()
        self.s, self.e1, self.e3 = nn.Conv2d(cin, s, 1), nn.Conv2d(s, e, 1), nn.Conv2d(s, e, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.relu(self.s(x))
        return torch.cat([F.relu(self.e1(z)), F.relu(self.e3(z))], 1)


def squeezenet() -> nn.Module:
    torch.manual_seed(0)
    f = nn.Sequential(nn.Conv2d(3, 64, 3, 2), nn.ReLU(), nn.MaxPool2d(3, 2), _Fire(64, 16, 64), _Fire(128, 32, 128),
                      nn.MaxPool2d(3, 2), _Fire(256, 48, 192))  # fmt: skip
    return _Classifier(f, 384).eval()


class _Dense(nn.Module):  # DenseNet layer: concatenates its output to its input
    def __init__(self, cin: int, g: int = 32) -> None:
        super().__init__()
        self.b = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, 4 * g, 1, bias=False),
                               nn.BatchNorm2d(4 * g), nn.ReLU(), nn.Conv2d(4 * g, g, 3, padding=1, bias=False))  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.b(x)], 1)


def densenet() -> nn.Module:
    torch.manual_seed(0)
    f = nn.Sequential(_cbr(3, 64, 3, 2), nn.MaxPool2d(2), _Dense(64), _Dense(96), _Dense(128),
                      nn.Conv2d(160, 128, 1), nn.AvgPool2d(2), _Dense(128), _Dense(160))  # fmt: skip
    return _randomize_bn(_Classifier(f, 192))


class _Mixed(nn.Module):  # Inception block: parallel 1x1, 3x3, double 3x3 and pool branches
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.a = _cbr(cin, 64, 1)
        self.b = nn.Sequential(_cbr(cin, 48, 1), _cbr(48, 64, 3))
        self.c = nn.Sequential(_cbr(cin, 48, 1), _cbr(48, 64, 3), _cbr(64, 64, 3))
        self.d = nn.Sequential(nn.AvgPool2d(3, 1, 1), _cbr(cin, 32, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.a(x), self.b(x), self.c(x), self.d(x)], 1)


def inception() -> nn.Module:
    torch.manual_seed(0)
    f = nn.Sequential(_cbr(3, 32, 3, 2), _cbr(32, 64, 3, 2), _Mixed(64), _Mixed(224))
    return _randomize_bn(_Classifier(f, 224))


class _XBlock(nn.Module):  # RegNet X block: 1x1, grouped 3x3, 1x1, residual
    def __init__(self, cin: int, cout: int, s: int, g: int = 16) -> None:
        super().__init__()
        self.b = nn.Sequential(
            _cbr(cin, cout, 1), _cbr(cout, cout, 3, s, groups=cout // g), _cbr(cout, cout, 1, act=nn.Identity)
        )
        self.skip = nn.Identity() if cin == cout and s == 1 else _cbr(cin, cout, 1, s, act=nn.Identity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.b(x) + self.skip(x))


def regnet() -> nn.Module:
    torch.manual_seed(0)
    f = nn.Sequential(_cbr(3, 32, 3, 2), _XBlock(32, 64, 2), _XBlock(64, 128, 2), _XBlock(128, 128, 1))
    return _randomize_bn(_Classifier(f, 128))


class _Deeplab(nn.Module):  # a small backbone and an ASPP head (atrous branches), upsampled to the input
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(_cbr(3, 32, 3, 2), _Basic(32, 64, 2), _Basic(64, 96, 1))
        self.aspp = nn.ModuleList(
            [nn.Conv2d(96, 64, 1)] + [nn.Conv2d(96, 64, 3, padding=d, dilation=d) for d in (2, 4)]
        )
        self.head = nn.Conv2d(192, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.backbone(x)
        y = self.head(torch.cat([F.relu(b(f)) for b in self.aspp], 1))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


def deeplab() -> nn.Module:
    torch.manual_seed(0)
    return _randomize_bn(_Deeplab())


class _LstmText(nn.Module):  # embedding -> 2-layer LSTM with state in/out -> classifier
    def __init__(self) -> None:
        super().__init__()
        self.emb, self.rnn, self.fc = (
            nn.Embedding(1000, 64),
            nn.LSTM(64, 128, num_layers=2, batch_first=True),
            nn.Linear(128, 20),
        )

    def forward(self, ids: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y, (h2, c2) = self.rnn(self.emb(ids), (h, c))
        return self.fc(y[:, -1]), h2, c2


def lstm_text() -> nn.Module:
    torch.manual_seed(0)
    return _LstmText().eval()


class _GruAudio(nn.Module):  # frame features -> bidirectional GRU with state in/out -> per-frame classes
    def __init__(self) -> None:
        super().__init__()
        self.inp, self.rnn, self.fc = (
            nn.Linear(40, 96),
            nn.GRU(96, 128, bidirectional=True, batch_first=True),
            nn.Linear(256, 12),
        )

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y, h2 = self.rnn(F.relu(self.inp(x)), h)
        return self.fc(y), h2


def gru_audio() -> nn.Module:
    torch.manual_seed(0)
    return _GruAudio().eval()


class _Stft(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        t, k = torch.arange(n).float(), torch.arange(n // 2 + 1).float()[:, None]
        w = torch.hann_window(n)
        basis = torch.cat([torch.cos(2 * torch.pi * k * t / n) * w, -torch.sin(2 * torch.pi * k * t / n) * w], 0)
        self.register_buffer("basis", basis[:, None, :])
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv1d(F.pad(x.unsqueeze(1), (0, self.n // 4), mode="reflect"), self.basis, stride=self.n // 4)
        c = self.n // 2 + 1
        return torch.sqrt(y[:, :c] ** 2 + y[:, c:] ** 2 + 1e-9)


class _VadBranch(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        c = n // 2 + 1
        self.stft = _Stft(n)
        self.enc = nn.Sequential(nn.Conv1d(c, 128, 3, 1, 1), nn.ReLU(), nn.Conv1d(128, 64, 3, 2, 1), nn.ReLU(),
                                 nn.Conv1d(64, 64, 3, 2, 1), nn.ReLU(), nn.Conv1d(64, 128, 3, 1, 1), nn.ReLU())  # fmt: skip
        self.rnn, self.dec = nn.LSTMCell(128, 128), nn.Conv1d(128, 1, 1)

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.enc(self.stft(x)).mean(-1)
        h, c = self.rnn(z, (state[0], state[1]))
        return torch.sigmoid(self.dec(F.relu(h).unsqueeze(-1))).squeeze(-1), torch.stack([h, c])


class _Vad(nn.Module):  # Silero-VAD-like: an If on the sample rate, a branch (STFT, convs, LSTM cell) per rate
    def __init__(self) -> None:
        super().__init__()
        self.m16, self.m8 = _VadBranch(256), _VadBranch(128)

    def forward(self, x: torch.Tensor, state: torch.Tensor, sr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if sr == 16000:
            return self.m16(x, state)
        return self.m8(x, state)


def vad() -> nn.Module:
    torch.manual_seed(0)
    return _Vad().eval()


# --------------------------------------------------------------------------- full-size ImageNet classifiers
# The layer tables of torchvision's MobileNetV3-Large, EfficientNet-B0 and ResNet-18 (224 x 224, 1000 classes),
# random weights, for benchmarks/convnets.py: the size at which users ship them, where the zoo's tiny versions
# (64 x 64) only show the Q/DQ overheads.


class _SqueezeExcite(nn.Module):
    def __init__(self, c: int, squeeze: int, act: Any, gate: Any) -> None:
        super().__init__()
        self.a, self.b, self.act, self.gate = nn.Conv2d(c, squeeze, 1), nn.Conv2d(squeeze, c, 1), act(), gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.b(self.act(self.a(F.adaptive_avg_pool2d(x, 1)))))


class _MBConv(nn.Module):  # MobileNetV3 bneck / EfficientNet MBConv: expand, depthwise, squeeze-excite, project
    def __init__(self, cin: int, k: int, hidden: int, cout: int, s: int, act: Any, se: tuple[int, Any, Any] | None):
        super().__init__()
        layers: list[nn.Module] = [] if hidden == cin else [_cbr(cin, hidden, 1, act=act)]
        layers.append(_cbr(hidden, hidden, k, s, groups=hidden, act=act))
        if se is not None:
            layers.append(_SqueezeExcite(hidden, *se))
        layers.append(_cbr(hidden, cout, 1, act=nn.Identity))
        self.body, self.res = nn.Sequential(*layers), s == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.res else y


def _make_divisible(v: float) -> int:
    return max(8, int(v + 4) // 8 * 8)


def mobilenet_v3_large() -> nn.Module:
    torch.manual_seed(0)
    re, hs = nn.ReLU, nn.Hardswish
    table = [(16, 3, 16, 16, 1, re, 0), (16, 3, 64, 24, 2, re, 0), (24, 3, 72, 24, 1, re, 0), (24, 5, 72, 40, 2, re, 1),
             (40, 5, 120, 40, 1, re, 1), (40, 5, 120, 40, 1, re, 1), (40, 3, 240, 80, 2, hs, 0),
             (80, 3, 200, 80, 1, hs, 0), (80, 3, 184, 80, 1, hs, 0), (80, 3, 184, 80, 1, hs, 0),
             (80, 3, 480, 112, 1, hs, 1), (112, 3, 672, 112, 1, hs, 1), (112, 5, 672, 160, 2, hs, 1),
             (160, 5, 960, 160, 1, hs, 1), (160, 5, 960, 160, 1, hs, 1)]  # fmt: skip
    blocks = [_MBConv(cin, k, h, cout, s, act, (_make_divisible(h / 4), nn.ReLU, nn.Hardsigmoid) if se else None)
              for cin, k, h, cout, s, act, se in table]  # fmt: skip
    net = nn.Sequential(_cbr(3, 16, 3, 2, act=hs), *blocks, _cbr(160, 960, 1, act=hs), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(960, 1280), hs(), nn.Linear(1280, 1000))  # fmt: skip
    return _randomize_bn(net)


def efficientnet_b0() -> nn.Module:
    torch.manual_seed(0)
    stages = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
              (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)]  # fmt: skip
    blocks = []
    for e, k, s, cin, cout, n in stages:
        for i in range(n):
            c = cin if i == 0 else cout
            blocks.append(_MBConv(c, k, c * e, cout, s if i == 0 else 1, nn.SiLU, (max(1, c // 4), nn.SiLU, nn.Sigmoid)))
    net = nn.Sequential(_cbr(3, 32, 3, 2, act=nn.SiLU), *blocks, _cbr(320, 1280, 1, act=nn.SiLU),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, 1000))  # fmt: skip
    return _randomize_bn(net)


def resnet18() -> nn.Module:
    torch.manual_seed(0)
    stem = nn.Sequential(_cbr(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1))
    blocks = [_Basic(64, 64, 1), _Basic(64, 64, 1), _Basic(64, 128, 2), _Basic(128, 128, 1), _Basic(128, 256, 2),
              _Basic(256, 256, 1), _Basic(256, 512, 2), _Basic(512, 512, 1)]  # fmt: skip
    return _randomize_bn(_Classifier(nn.Sequential(stem, *blocks), 512, classes=1000))
