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


def run_experiment(cmd: list[str], workdir: str, cwd: str) -> tuple[dict, float]:
  """Runs one `python -m sms_jax.main ...` command on the CPU, its output saved next to
  `workdir` as `<workdir>.log`; returns (its results.json, the process's wall time in s)."""
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  tic = time.perf_counter()
  proc = subprocess.run(cmd, cwd=cwd, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                        capture_output=True, text=True, check=False)
  wall = time.perf_counter() - tic
  with open(workdir + ".log", "w") as f:
    f.write(proc.stdout + proc.stderr)
  if proc.returncode:
    raise RuntimeError(f"{cmd} failed:\n{proc.stderr[-3000:]}")
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f), wall
