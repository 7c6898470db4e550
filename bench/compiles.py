#!/usr/bin/env python
"""How many programs one run compiles, and where: the tiny SMS run of tests/test_sms.py.

Every XLA compilation JAX logs (`jax_log_compiles`) is attributed to the innermost sms_jax
frame that asked for it; the persistent compilation cache is pointed at a fresh folder so
nothing is skipped. Prints the total and the call sites, most compilations first:

  JAX_PLATFORMS=cpu python bench/compiles.py
"""

import collections
import logging
import os
import sys
import tempfile
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "tests"), ROOT]
os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

from sms_jax import experiment  # pylint: disable=g-import-not-at-top,wrong-import-position
from test_sms import _sms_config  # pylint: disable=g-import-not-at-top,wrong-import-position


class _Sites(logging.Handler):
  """Counts 'Compiling <name>' log records by their innermost sms_jax frame."""

  def __init__(self):
    super().__init__()
    self.sites = collections.Counter()

  def emit(self, record):
    message = record.getMessage()
    if not message.startswith("Compiling "):
      return
    name, site = message.split()[1], "(outside sms_jax)"
    for frame in reversed(traceback.extract_stack()):
      if "/sms_jax/" in frame.filename:
        site = f"{frame.filename.split('/sms_jax/')[1]}:{frame.lineno} {frame.name}"
        break
    self.sites[f"{name} @ {site}"] += 1


def main():
  jax.config.update("jax_log_compiles", True)
  sites = _Sites()
  logging.getLogger("jax").addHandler(sites)
  logging.getLogger("jax").setLevel(logging.WARNING)
  experiment.run(_sms_config(), tempfile.mkdtemp())
  print(f"\n{sum(sites.sites.values())} compilations in one tiny SMS run "
        "(512 MNIST-1D examples, 2 dense epochs, 2 phases of 2 candidates x 2 epochs)")
  for site, count in sites.sites.most_common():
    print(f"{count:4d}  {site}")


if __name__ == "__main__":
  main()
