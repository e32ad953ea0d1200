"""One ISIF training step in plain PyTorch, for `uel bench step` to be read against.

The same model shapes as uel's small_cnn (configs/fmnist-isif.ini: width 16, a 4 x 4 pooling
grid, 128-d head) and ResNet-18 with the CIFAR stem (configs/cifar10-isif.ini), the same ISIF
loss (two views of each instance, softmax over the batch at temperature 0.1, keys detached) and
SGD with momentum 0.9 and weight decay 5e-4. Started by mpirun with several ranks, it is the
data-parallel step uel takes: DistributedDataParallel over gloo, each rank b = batch / ranks
instances, keys all-gathered so every softmax sees the global batch, no buffer broadcast (uel
without SyncBN keeps each rank's BatchNorm statistics). Its inputs are random tensors already on
the device, so it times forward, backward, the collectives and the optimizer only: uel's figure
also pays for reading and augmenting the images. Rank 0 prints one line: instances/s of the whole
job, eager and, where torch >= 2, under torch.compile.

usage: [mpirun -np N] python3 tools/peer/step.py --model small_cnn|resnet18 [--batch N]
           [--steps N] [--warmup N] [--device cuda|cpu] [--threads N] [--port P] [--no-compile]
"""
import argparse
import os
import time

import torch
import torch.distributed as dist
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
    """z: [2b, D] of this rank, rows i and i + b the two views of instance i; the keys are every
    rank's z, detached, rank after rank."""
    m = z.shape[0]
    b = m // 2
    keys, offset = z.detach(), 0
    if dist.is_initialized():
        parts = [torch.empty_like(keys) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, keys.contiguous())
        keys, offset = torch.cat(parts), dist.get_rank() * m
    logits = z @ keys.t() / temperature
    rows = torch.arange(m, device=z.device)
    partner = (rows + b) % m + offset
    self_mask = torch.zeros_like(logits, dtype=torch.bool)
    self_mask[rows, rows + offset] = True
    others = logits.masked_fill(self_mask, float("-inf"))
    log_q = others - torch.logsumexp(others, 1, keepdim=True)
    log_p = log_q[rows, partner]
    negatives = self_mask.clone()
    negatives[rows, partner] = True
    spread = torch.log(-torch.expm1(log_q.masked_fill(negatives, float("-inf")).clamp_max(-1e-7)))
    return -(log_p + spread.sum(1)).mean()


def world():
    """(rank, ranks) from mpirun's (OpenMPI) or torchrun's variables; (0, 1) started alone."""
    for rank, size in (("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"), ("RANK", "WORLD_SIZE")):
        if size in os.environ:
            return int(os.environ[rank]), int(os.environ[size])
    return 0, 1


def instances_per_s(loss_of, params, x, steps, warmup, device):
    opt = torch.optim.SGD(params, lr=0.03, momentum=0.9, weight_decay=5e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        loss_of(x).backward()
        opt.step()

    def wait():
        if device.type == "cuda":
            torch.cuda.synchronize()
        if dist.is_initialized():
            dist.barrier()

    for _ in range(warmup):
        step()
    wait()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    wait()
    ranks = dist.get_world_size() if dist.is_initialized() else 1
    return steps * ranks * (x.shape[0] // 2) / (time.perf_counter() - start)


def step_mflop(model, shape):
    """MFLOP of one instance's step: two views, forward and backward (about twice the forward:
    input and weight gradients) through the convolutions and the head, the rest ignored."""
    macs = []

    def count(module, inputs, output):
        weight = module.weight
        per_output = weight[0].numel()  # Cin/groups x kh x kw, or in_features
        macs.append(output[0].numel() * per_output)

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, *shape, device=next(model.parameters()).device))
    for h in hooks:
        h.remove()
    return 2 * 3 * 2 * sum(macs) / 1e6


def matmul_gflops(n=2048, repeats=10):
    """The practical peak: GFLOP/s of an n x n float32 matmul at this process's threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return repeats * 2 * n**3 / (time.perf_counter() - start) / 1e9


def main():
    p = argparse.ArgumentParser(description="one ISIF step in plain PyTorch")
    p.add_argument("--model", choices=["small_cnn", "resnet18"], required=True)
    p.add_argument("--batch", type=int, default=0, help="instances (default: the recipe's)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--port", type=int, default=29517, help="rank 0's TCP port (several ranks)")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--peak", action="store_true", help="also time a 2048^3 float32 matmul (GFLOP/s)")
    a = p.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    rank, ranks = world()
    if ranks > 1:
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{a.port}", rank=rank, world_size=ranks
        )
    torch.manual_seed(0)
    if a.model == "small_cnn":
        batch, shape, backbone = a.batch or 256, (1, 28, 28), SmallCnn()
    else:
        batch, shape, backbone = a.batch or 128, (3, 32, 32), ResNet18()
    if batch % ranks:
        p.error(f"--batch {batch} does not split over {ranks} ranks")
    model = EmbeddingNet(backbone).to(device)
    mflop = step_mflop(model, shape)
    if ranks > 1:
        model = nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)
    x = torch.randn(2 * (batch // ranks), *shape, device=device)  # two views per instance
    eager = instances_per_s(lambda v: isif_loss(model(v)), model.parameters(), x, a.steps, a.warmup, device)
    compiled = "skipped (--no-compile)"
    if not a.no_compile:
        if int(torch.__version__.split(".")[0]) < 2:
            compiled = f"skipped (torch {torch.__version__} has no torch.compile)"
        else:
            fn = torch.compile(lambda v: isif_loss(model(v)))
            compiled = f"{instances_per_s(fn, model.parameters(), x, a.steps, a.warmup, device):.0f} img/s"
    if rank == 0:
        print(
            f"peer {a.model} batch {batch} ({ranks} rank(s)) on {a.device} (torch {torch.__version__}): "
            f"eager {eager:.0f} img/s, torch.compile {compiled}; {mflop:.1f} MFLOP per instance",
            flush=True,
        )
        if a.peak:
            print(f"matmul 2048^3 float32: {matmul_gflops():.1f} GFLOP/s", flush=True)
    if ranks > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
