#!/usr/bin/env python
"""PyTorch (CPU) reference for bench/bench_step.py: ResNet-20 train-step throughput.

The same network as `sms_jax.models.create_model("resnet20", 10)`: He et al. CIFAR ResNet-20
with option A shortcuts (stride-2 subsampling + zero-padded channels), BatchNorm (momentum 0.1
in PyTorch's convention = 0.9 in Flax's, eps 1e-5), no conv biases, He fan_out init, and SGD
with momentum 0.9, weight decay 5e-4 (coupled, as `sms_jax.training.optimizers.sgd`), lr 0.05,
cross-entropy loss. Batch 128 of CIFAR-shaped synthetic data.

Images/s is measured as in bench_step.py: median over `--repeats` timed steps after warm-up;
each step ends with the optimizer update (PyTorch CPU ops are synchronous, so no extra
synchronisation is needed). Uses `torch.set_num_threads(os.cpu_count())`.

Needs PyTorch (CPU build) in a separate virtualenv, e.g.:

  python3 -m venv torch-venv && torch-venv/bin/pip install torch==2.13.0 numpy
  torch-venv/bin/python bench/torch_resnet20.py --repeats 10 --json /tmp/torch.json
"""

import argparse
import json
import os
import platform
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from machine import cpu_model  # bench/machine.py: this script's folder is on sys.path


class BasicBlock(nn.Module):
  """relu(BN(conv3x3(relu(BN(conv3x3(x))))) + shortcut(x)), option A shortcut."""

  def __init__(self, in_planes, planes, stride=1):
    super().__init__()
    self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.stride, self.extra = stride, planes - in_planes

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    if self.stride != 1 or self.extra:
      x = x[:, :, ::self.stride, ::self.stride]
      x = F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
    return F.relu(x + y)


class ResNet20(nn.Module):

  def __init__(self, num_classes=10, n=3, widths=(16, 32, 64)):
    super().__init__()
    self.stem_conv = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
    self.stem_bn = nn.BatchNorm2d(widths[0])
    blocks, in_planes = [], widths[0]
    for i, w in enumerate(widths):
      for j in range(n):
        blocks.append(BasicBlock(in_planes, w, 2 if i > 0 and j == 0 else 1))
        in_planes = w
    self.blocks = nn.Sequential(*blocks)
    self.classifier = nn.Linear(widths[-1], num_classes)
    for m in self.modules():
      if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

  def forward(self, x):
    x = F.relu(self.stem_bn(self.stem_conv(x)))
    x = self.blocks(x)
    return self.classifier(x.mean(dim=(2, 3)))


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--batch_size", type=int, default=128)
  p.add_argument("--repeats", type=int, default=10)
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--threads", type=int, default=0, help="0 = os.cpu_count()")
  p.add_argument("--channels_last", action="store_true", help="NHWC memory format")
  p.add_argument("--json", default="")
  args = p.parse_args()

  torch.set_num_threads(args.threads or os.cpu_count())
  torch.manual_seed(0)
  info = {"platform": "cpu", "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
          "torch": torch.__version__, "num_threads": torch.get_num_threads(),
          "mkldnn": torch.backends.mkldnn.is_available(), "python": platform.python_version(),
          "parallel_info": torch.__config__.parallel_info().splitlines()[:6]}
  print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items() if k != "parallel_info"),
        flush=True)

  b = args.batch_size
  model = ResNet20().train()
  opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
  x = torch.randn(b, 3, 32, 32)
  y = torch.randint(0, 10, (b,))
  if args.channels_last:
    model = model.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)

  def step():
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss

  for _ in range(args.warmup):
    step()
  times = []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    step()
    times.append(time.perf_counter() - t0)
  med = statistics.median(times)
  print(f"torch resnet20 b{b}{' channels_last' if args.channels_last else ''}: "
        f"{b / med:.1f} images/s (median {med * 1e3:.1f} ms over {args.repeats}; "
        f"min {min(times) * 1e3:.1f}, max {max(times) * 1e3:.1f})", flush=True)
  result = {"model": "resnet20", "framework": "torch", "batch_size": b,
            "channels_last": args.channels_last, "machine": info,
            "step": {"images_per_s": b / med, "median_s": med, "times_s": times}}
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  main()
