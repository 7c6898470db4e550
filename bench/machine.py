"""Machine facts shared by the benchmarks; imports nothing beyond the standard library, so
the PyTorch benchmark can use it from a venv without JAX."""

import platform


def cpu_model() -> str:
  """The CPU's model name from /proc/cpuinfo (else what `platform` knows)."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"
