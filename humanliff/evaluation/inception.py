"""The Inception-v3 network that FID is defined by: its 2048-d pool features feed FID and KID (``metrics``).

FID (Heusel et al. 2017) is defined on TensorFlow's 2015-12-05 Inception graph; pytorch-fid ported its
weights to ``pt_inception-2015-12-05-6726825d.pth``, a state dict of torchvision's ``Inception3`` layout
(1008 classes, no auxiliary head) whose mixed blocks differ from torchvision's in two ways: the
average pools of the A, C and E blocks exclude the padding, and the last E block (``Mixed_7c``) pools
its fourth branch with a max pool. The network is written here from that description, so the weights
file's state dict loads into it unchanged; nothing is downloaded.

Images go in as float ``[N, 3, H, W]`` in [0, 1]; they are resized to 299 x 299 (bilinear) and scaled to
[-1, 1], as pytorch-fid does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from humanliff.errors import InputFileError
from humanliff.io import read_torch_file

WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_NAME}"
FEATURES = 2048
INPUT_SIZE = 299
"""Side the images are resized to (FID's; the tests lower it to run the network quickly)."""


class _Conv(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3), ReLU: torchvision's ``BasicConv2d`` keys."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-1 average pool that ignores the padding (TensorFlow's, hence FID's)."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class _BlockA(nn.Module):
    """35x35 block: 1x1, 5x5, double 3x3 and pooled branches -> 224 + ``pool`` channels."""

    def __init__(self, cin: int, pool: int) -> None:
        super().__init__()
        self.branch1x1 = _Conv(cin, 64, 1)
        self.branch5x5_1, self.branch5x5_2 = _Conv(cin, 48, 1), _Conv(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _Conv(cin, 64, 1)
        self.branch3x3dbl_2 = _Conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _Conv(96, 96, 3, padding=1)
        self.branch_pool = _Conv(cin, pool, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(_avg(x))], 1)


class _BlockB(nn.Module):
    """35 -> 17 reduction: strided 3x3, double 3x3 and max-pool branches."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = _Conv(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = _Conv(cin, 64, 1)
        self.branch3x3dbl_2 = _Conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _Conv(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          F.max_pool2d(x, 3, stride=2)], 1)


class _BlockC(nn.Module):
    """17x17 block with factorized 7x7 convolutions of width ``c7``: 768 channels out."""

    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        row, col = {"kernel": (1, 7), "padding": (0, 3)}, {"kernel": (7, 1), "padding": (3, 0)}
        self.branch1x1 = _Conv(cin, 192, 1)
        self.branch7x7_1 = _Conv(cin, c7, 1)
        self.branch7x7_2 = _Conv(c7, c7, **row)
        self.branch7x7_3 = _Conv(c7, 192, **col)
        self.branch7x7dbl_1 = _Conv(cin, c7, 1)
        self.branch7x7dbl_2 = _Conv(c7, c7, **col)
        self.branch7x7dbl_3 = _Conv(c7, c7, **row)
        self.branch7x7dbl_4 = _Conv(c7, c7, **col)
        self.branch7x7dbl_5 = _Conv(c7, 192, **row)
        self.branch_pool = _Conv(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seven = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        double = x
        for i in range(1, 6):
            double = getattr(self, f"branch7x7dbl_{i}")(double)
        return torch.cat([self.branch1x1(x), seven, double, self.branch_pool(_avg(x))], 1)


class _BlockD(nn.Module):
    """17 -> 8 reduction: 3x3 and 7x7-then-3x3 strided branches and a max pool."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1, self.branch3x3_2 = _Conv(cin, 192, 1), _Conv(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _Conv(cin, 192, 1)
        self.branch7x7x3_2 = _Conv(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _Conv(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _Conv(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tall = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), tall, F.max_pool2d(x, 3, stride=2)], 1)


class _BlockE(nn.Module):
    """8x8 block with split 1x3 / 3x1 branches: 2048 channels out; ``max_pool`` for FID's ``Mixed_7c``."""

    def __init__(self, cin: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = _Conv(cin, 320, 1)
        self.branch3x3_1 = _Conv(cin, 384, 1)
        self.branch3x3_2a = _Conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _Conv(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _Conv(cin, 448, 1)
        self.branch3x3dbl_2 = _Conv(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _Conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _Conv(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _Conv(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3_1(x)
        b = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg(x)
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(a), self.branch3x3_2b(a),
                          self.branch3x3dbl_3a(b), self.branch3x3dbl_3b(b), self.branch_pool(pooled)], 1)


class FIDInception(nn.Module):
    """Inception-v3 as in the FID weights file; ``forward`` gives the pool features ``[N, 2048]``."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = _Conv(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _Conv(32, 32, 3)
        self.Conv2d_2b_3x3 = _Conv(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _Conv(64, 80, 1)
        self.Conv2d_4a_3x3 = _Conv(80, 192, 3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = _BlockA(192, 32), _BlockA(256, 64), _BlockA(288, 64)
        self.Mixed_6a = _BlockB(288)
        self.Mixed_6b, self.Mixed_6c = _BlockC(768, 128), _BlockC(768, 160)
        self.Mixed_6d, self.Mixed_6e = _BlockC(768, 160), _BlockC(768, 192)
        self.Mixed_7a = _BlockD(768)
        self.Mixed_7b, self.Mixed_7c = _BlockE(1280, max_pool=False), _BlockE(2048, max_pool=True)
        self.fc = nn.Linear(FEATURES, 1008)
        """The classifier of the weights file; unused by FID, kept so that the state dict loads strictly."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Pool-3 features ``[N, 2048]`` of images ``[N, 3, H, W]`` in [0, 1]."""
        size = (INPUT_SIZE, INPUT_SIZE)
        x = F.interpolate(images.float(), size=size, mode="bilinear", align_corners=False) * 2.0 - 1.0
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, 3, stride=2)))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return x.mean(dim=(2, 3))


def default_weights() -> Path:
    """Where torch hub keeps the weights file: ``<torch hub dir>/checkpoints/pt_inception-...pth``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_NAME


def missing_weights_hint(path: Path) -> str:
    """The one line telling how to get the weights (never downloaded here)."""
    return (f"FID/KID skipped: no Inception weights at {path}; download {WEIGHTS_URL} there "
            f"(or pass --inception PATH)")


def load_inception(path: str | Path, device: torch.device | str = "cpu") -> FIDInception:
    """The network with the weights of ``path`` (a state dict of exactly its keys and shapes), in eval mode.

    Raises ``InputFileError`` naming the file when it is unreadable or not this network.
    """
    path = Path(path)
    state = read_torch_file(path)
    if not isinstance(state, dict):
        raise InputFileError(path, "not a torch state dict")
    net = FIDInception()
    expected = {k: v.shape for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    found = {k: getattr(v, "shape", None) for k, v in state.items() if not k.endswith("num_batches_tracked")}
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(expected) & set(found) if tuple(found[k] or ()) != tuple(expected[k]))
    if missing or extra or wrong:
        first = (missing or extra or wrong)[0]
        raise InputFileError(path, f"not the FID Inception network ({WEIGHTS_NAME}): {len(missing)} keys "
                                   f"missing, {len(extra)} unexpected, {len(wrong)} of another shape "
                                   f"(first: {first})")
    net.load_state_dict(state, strict=False)
    return net.eval().to(device)


@torch.no_grad()
def inception_features(net: FIDInception, images: np.ndarray, batch: int = 32) -> np.ndarray:
    """float64 ``[N, 2048]`` features of images ``[N, H, W, 3]`` (uint8, or float in [0, 1])."""
    device = next(net.parameters()).device
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    out = []
    for start in range(0, len(images), batch):
        chunk = torch.from_numpy(np.asarray(images[start:start + batch], np.float32) / scale)
        out.append(net(chunk.permute(0, 3, 1, 2).to(device)).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, FEATURES))
