"""One ISIF training step in plain PyTorch, for `uel bench step` to be read against.

The same model shapes as uel's small_cnn (configs/fmnist-isif.ini: width 16, a 4 x 4 pooling
grid, 128-d head) and ResNet-18 with the CIFAR stem (configs/cifar10-isif.ini), the same ISIF
loss (two views of each instance, softmax over the batch at temperature 0.1, keys detached) and
SGD with momentum 0.9 and weight decay 5e-4, at one process. Its inputs are random tensors already
on the device, so it times forward, backward and the optimizer only: uel's figure also pays for
reading and augmenting the images. Prints one line: instances/s eager and, where torch >= 2,
under torch.compile.

usage: python3 tools/peer/step.py --model small_cnn|resnet18 [--batch N] [--steps N]
           [--warmup N] [--device cuda|cpu] [--threads N] [--no-compile]
"""
import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv(cin, cout, kernel, stride, padding):
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)


class SmallCnn(nn.Module):
    def __init__(self, channels=1, width=16, grid=4):
        super().__init__()
        layers, cin = [], channels
        for stage in range(4):
            cout = width << stage
            layers += [conv(cin, cout, 3, 1 if stage == 0 else 2, 1), nn.BatchNorm2d(cout), nn.ReLU()]
            cin = cout
        self.body = nn.Sequential(*layers)
        self.grid = grid
        self.out_features = cin * grid * grid

    def forward(self, x):
        return F.adaptive_avg_pool2d(self.body(x), self.grid).flatten(1)


class Block(nn.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1, self.bn1 = conv(cin, planes, 3, stride, 1), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = conv(planes, planes, 3, 1, 1), nn.BatchNorm2d(planes)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != planes:
            self.shortcut = nn.Sequential(conv(cin, planes, 1, stride, 0), nn.BatchNorm2d(planes))

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, channels=3):
        super().__init__()
        self.stem = nn.Sequential(conv(channels, 64, 3, 1, 1), nn.BatchNorm2d(64), nn.ReLU())
        blocks, cin = [], 64
        for stage in range(4):
            planes = 64 << stage
            for b in range(2):
                blocks.append(Block(cin, planes, 2 if b == 0 and stage > 0 else 1))
                cin = planes
        self.blocks = nn.Sequential(*blocks)
        self.out_features = cin

    def forward(self, x):
        return self.blocks(self.stem(x)).mean((2, 3))


class EmbeddingNet(nn.Module):
    def __init__(self, backbone, low_dim=128):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.out_features, low_dim)

    def forward(self, x):
        return F.normalize(self.head(self.backbone(x)), dim=1, eps=1e-12)


def isif_loss(z, temperature=0.1):
    """z: [2b, D], rows i and i + b the two views of instance i."""
    m = z.shape[0]
    b = m // 2
    logits = z @ z.detach().t() / temperature
    rows = torch.arange(m, device=z.device)
    partner = (rows + b) % m
    others = logits.masked_fill(torch.eye(m, dtype=torch.bool, device=z.device), float("-inf"))
    log_q = others - torch.logsumexp(others, 1, keepdim=True)
    log_p = log_q[rows, partner]
    negatives = torch.eye(m, dtype=torch.bool, device=z.device)
    negatives[rows, partner] = True
    spread = torch.log(-torch.expm1(log_q.masked_fill(negatives, float("-inf")).clamp_max(-1e-7)))
    return -(log_p + spread.sum(1)).mean()


def instances_per_s(loss_of, params, x, steps, warmup, device):
    opt = torch.optim.SGD(params, lr=0.03, momentum=0.9, weight_decay=5e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        loss_of(x).backward()
        opt.step()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * (x.shape[0] // 2) / (time.perf_counter() - start)


def main():
    p = argparse.ArgumentParser(description="one ISIF step in plain PyTorch")
    p.add_argument("--model", choices=["small_cnn", "resnet18"], required=True)
    p.add_argument("--batch", type=int, default=0, help="instances (default: the recipe's)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--no-compile", action="store_true")
    a = p.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    torch.manual_seed(0)
    if a.model == "small_cnn":
        batch, shape, backbone = a.batch or 256, (1, 28, 28), SmallCnn()
    else:
        batch, shape, backbone = a.batch or 128, (3, 32, 32), ResNet18()
    model = EmbeddingNet(backbone).to(device)
    x = torch.randn(2 * batch, *shape, device=device)  # two views per instance
    eager = instances_per_s(lambda v: isif_loss(model(v)), model.parameters(), x, a.steps, a.warmup, device)
    compiled = "skipped (--no-compile)"
    if not a.no_compile:
        if int(torch.__version__.split(".")[0]) < 2:
            compiled = f"skipped (torch {torch.__version__} has no torch.compile)"
        else:
            fn = torch.compile(lambda v: isif_loss(model(v)))
            compiled = f"{instances_per_s(fn, model.parameters(), x, a.steps, a.warmup, device):.0f} img/s"
    print(
        f"peer {a.model} batch {batch} on {a.device} (torch {torch.__version__}): "
        f"eager {eager:.0f} img/s, torch.compile {compiled}",
        flush=True,
    )


if __name__ == "__main__":
    main()
