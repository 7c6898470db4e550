"""Layerwise density distributions and the densities tool."""

import functools
import json

import numpy as np
import pytest

from sms_jax.sparsity import distributions
from sms_jax.tools import densities

SMALL = [(3, 3, 2, 4), (4, 6)]  # Sizes 72 and 24; at density 0.5: 48 nonzeros.


@pytest.mark.parametrize("distribution, expected", [
    ("uniform", [0.5, 0.5]),
    # ERK scores 12/72 and 10/24: eps = 48 / (12 + 10).
    ("erk", [48 / 22 * 12 / 72, 48 / 22 * 10 / 24]),
    # ER scores (2 + 4) / 8 and (4 + 6) / 24: eps = 48 / (54 + 10).
    ("er", [0.75 * 0.75, 0.75 * 10 / 24]),
    # The same 24 nonzeros in each layer.
    ("balanced", [24 / 72, 1.0]),
    # 72 r + 24 r^2 = 48: r = (sqrt(17) - 3) / 2.
    ("pyramidal", [(17 ** 0.5 - 3) / 2, ((17 ** 0.5 - 3) / 2) ** 2]),
])
def test_densities_match_hand_computed_values(distribution, expected):
  np.testing.assert_allclose(distributions.layer_densities(SMALL, distribution, 0.5), expected,
                             rtol=1e-9)


def test_saturated_layers_are_made_dense_and_the_rest_re_solved():
  shapes = [(2, 2), (10, 10), (10, 10)]  # Balanced would give the 4-weight layer 34 weights.
  np.testing.assert_allclose(distributions.layer_densities(shapes, "balanced", 0.5),
                             [1.0, 0.49, 0.49])
  rng = np.random.default_rng(0)
  for _ in range(20):
    shapes = [tuple(int(x) for x in rng.integers(1, 40, size=rng.choice([2, 4])))
              for _ in range(6)]
    sizes = np.asarray([np.prod(s) for s in shapes])
    for distribution in ("er", "erk", "balanced"):
      d = distributions.layer_densities(shapes, distribution, 0.4)
      assert d.max() <= 1.0 + 1e-12
      assert (d * sizes).sum() == pytest.approx(0.4 * sizes.sum())


@functools.lru_cache(maxsize=None)
def _kernels(model):
  return densities.prunable_kernels(model, "cifar10")


@pytest.mark.parametrize("model", ["resnet18", "vgg16"])
@pytest.mark.parametrize("density", [0.3, 0.1, 0.01])
def test_models_reach_the_exact_global_density(model, density):
  shapes = [shape for _, shape in _kernels(model)]
  sizes = np.asarray([np.prod(s) for s in shapes])
  for distribution in distributions.DISTRIBUTIONS:
    d = distributions.layer_densities(shapes, distribution, density)
    counts = distributions.layer_counts(shapes, d)
    assert abs(sum(counts) / sizes.sum() - density) < 1e-3
    assert d.max() <= 1.0 + 1e-12
    if distribution == "pyramidal":
      assert np.all(np.diff(d) < 0)  # Denser near the input.
    if distribution == "erk":  # Unsaturated layers follow the ERK score exactly.
      scores = np.asarray([sum(s) / np.prod(s) for s in shapes])
      free = d < 1.0
      np.testing.assert_allclose(d[free] / scores[free], (d[free] / scores[free])[0])


def test_kernels_are_in_forward_order():
  names = [name for name, _ in _kernels("vgg16")]
  assert len(names) == 14 and names[-1] == "classifier/kernel"  # 13 convs, 1 linear.
  assert _kernels("vgg16")[0][1] == (3, 3, 3, 64)


def test_tool_prints_json_and_a_table(capsys):
  assert densities.main(["--model=vgg16", "--dataset=cifar10", "--distribution=balanced",
                         "--density=0.01", "--json"]) == 0
  report = json.loads(capsys.readouterr().out)
  assert set(report) == {"model", "distribution", "density", "achieved_density", "layers",
                         "warnings"}
  assert abs(report["achieved_density"] - 0.01) < 1e-3
  nonzero = [layer["nonzero"] for layer in report["layers"] if layer["density"] < 1]
  assert max(nonzero) - min(nonzero) <= 1  # Balanced: the same count in every free layer.
  assert densities.main(["--model=cnn1d", "--dataset=mnist1d", "--density=0.2"]) == 0
  out = capsys.readouterr().out
  assert "conv0/kernel" in out and "achieved density 0.2" in out


@pytest.mark.parametrize("args, expected", [
    (["--model=resnet19", "--density=0.1"], "--model=resnet19 is not allowed"),
    (["--model=vgg16", "--density=1.5"], "--density=1.5 is not allowed; allowed: a number in"),
    (["--model=vgg16", "--density=0.1", "--distribution=x"], "--distribution=x is not allowed"),
    (["--model=resnet20", "--dataset=mnist1d", "--density=0.1"], "cannot take mnist1d inputs"),
])
def test_tool_refuses_bad_input_in_one_line(args, expected, capsys):
  assert densities.main(args) == 2
  err = capsys.readouterr().err
  assert expected in err and len(err.strip().splitlines()) == 1
