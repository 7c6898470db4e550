"""The densities tool: its warning for nearly empty layers (checked against an independent
computation of the pyramidal densities of a hand-written CIFAR ResNet-18) and its absl flags."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import optimize

from sms_jax.tools import densities

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _resnet18_kernels():
  """The CIFAR ResNet-18's kernel shapes in forward order, written out by hand: a 3x3 stem,
  four stages of two basic blocks (3x3 convs; a 1x1 shortcut after the second conv of each
  later stage's first block) and the 512 -> 10 classifier."""
  shapes, width = [(3, 3, 3, 64)], 64
  for stage, out in enumerate((64, 128, 256, 512)):
    for block in range(2):
      shapes += [(3, 3, width, out), (3, 3, out, out)]
      if stage and not block:
        shapes.append((1, 1, width, out))
      width = out
  return shapes + [(512, 10)]


def _pyramidal_counts(shapes, density):
  """`round(r ** l * n_l)` with r solving sum(n_l r ** l) = density * sum(n_l)."""
  sizes = np.asarray([np.prod(s) for s in shapes], np.float64)
  powers = np.arange(1, len(sizes) + 1)
  r = optimize.brentq(lambda r: (sizes * r ** powers).sum() - density * sizes.sum(), 1e-9, 1.0,
                      xtol=1e-15)
  return [int(round(r ** l * n)) for l, n in zip(powers, sizes)]


def _run(capsys, *args):
  code = densities.main(list(args))
  out, err = capsys.readouterr()
  return code, out, err


def test_pyramidal_001_warns_that_resnet18s_classifier_keeps_3_of_5120(capsys):
  shapes = _resnet18_kernels()
  counts = _pyramidal_counts(shapes, 0.01)
  assert counts[-1] == 3 and np.prod(shapes[-1]) == 5120  # The independent computation.
  expected = [k for k, (shape, count) in enumerate(zip(shapes, counts)) if count < shape[-1]]
  code, out, err = _run(capsys, "--model=resnet18", "--dataset=cifar10",
                        "--distribution=pyramidal", "--density=0.01", "--json")
  assert code == 0
  report = json.loads(out)
  assert [tuple(l["shape"]) for l in report["layers"]] == shapes
  assert [l["nonzero"] for l in report["layers"]] == counts
  warned = [w["layer"] for w in report["warnings"]]
  assert warned == [report["layers"][k]["name"] for k in expected]
  assert warned[-1] == "classifier/kernel"
  assert {k: report["warnings"][-1][k] for k in ("nonzero", "size", "outputs")} == {
      "nonzero": 3, "size": 5120, "outputs": 10}
  lines = err.strip().splitlines()
  assert len(lines) == len(expected)  # One line per nearly empty layer.
  assert all(line.startswith("densities: warning: ") for line in lines)
  assert "classifier/kernel keeps 3 of 5120 weights" in lines[-1]
  assert "fewer than its 10 outputs" in lines[-1]


def test_uniform_05_warns_nothing(capsys):
  code, out, err = _run(capsys, "--model=resnet18", "--distribution=uniform", "--density", "0.5",
                        "--json")
  assert code == 0 and err == ""
  assert json.loads(out)["warnings"] == []
  code, out, err = _run(capsys, "--model=resnet18", "--distribution=uniform", "--density=0.5",
                        "--nojson")
  assert code == 0 and err == "" and "achieved density 0.500000" in out


@pytest.mark.parametrize("args, expected", [
    (["--model=vgg16", "--density=abc"],
     "--density=abc is not allowed; allowed: a number in (0, 1]"),
    (["--model=vgg16", "--density=0.1", "--json=maybe"], "--json=maybe is not allowed"),
    (["--model=vgg16", "--density=0.1", "--depth=3"], "unknown flag --depth; allowed: --model"),
    (["--density=0.1"], "--model is required; allowed: mlp"),
    (["--model=vgg16"], "--density is required"),
    (["--model=vgg16", "--density=0.1", "extra"], "unexpected arguments 'extra'"),
    (["--model=vgg16", "--dataset=cifar11", "--density=0.1"], "--dataset=cifar11 is not allowed"),
])
def test_bad_flags_are_one_line_and_exit_2(capsys, args, expected):
  code, out, err = _run(capsys, *args)
  assert code == 2 and out == ""
  assert expected in err and len(err.strip().splitlines()) == 1, err


def test_command_line_exit_codes_and_help():
  run = lambda *args: subprocess.run([sys.executable, "-m", "sms_jax.tools.densities", *args],
                                     cwd=ROOT, capture_output=True, text=True, timeout=120,
                                     env=dict(os.environ, JAX_PLATFORMS="cpu"))
  bad = run("--model=vgg16", "--density=2")
  assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
      "densities: --density=2 is not allowed; allowed: a number in (0, 1]"]
  helped = run("--help")
  assert helped.returncode == 0 and "--distribution" in helped.stdout
