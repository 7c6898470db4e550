"""Export every phase of the embedded default's run and check the loaded models.

  python bench/export_default.py [--workdir=runs/demo]

Runs `configs/mnist1d.py` into the workdir unless it holds a finished run, exports phase 0
(the dense model) to the last, loads each file (`sms_jax.load`) and prints a markdown table:
sparsity, file size against the dense float32 size, the run's test accuracy and the loaded
model's on the raw test signals, and whether they are equal.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default=None, help="default: a temporary directory")
  args = parser.parse_args()
  workdir = args.workdir or tempfile.mkdtemp(prefix="export_default_")
  if not os.path.exists(os.path.join(workdir, "results.json")):
    subprocess.run([sys.executable, "-m", "sms_jax.main", "--config=configs/mnist1d.py",
                    f"--workdir={workdir}"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
  import sms_jax  # pylint: disable=g-import-not-at-top
  from sms_jax import export  # pylint: disable=g-import-not-at-top
  from sms_jax.data import sources  # pylint: disable=g-import-not-at-top

  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  _, test, _ = sources.DATASETS["mnist1d"].load("")
  print("| phase | sparsity | file | dense float32 | ratio | run's test accuracy | loaded "
        "| equal |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- |")
  for phase in range(len(results["phases"]) + 1):
    summary = export.export_run(workdir, os.path.join(workdir, f"bench_phase{phase}.sms"),
                                phase=phase)
    loaded = sms_jax.load(summary["path"])
    accuracy = float((loaded.predict(test.x).argmax(-1) == test.y).mean())
    expected = summary["metrics"]["test_accuracy"]
    print(f"| {phase} | {summary['sparsity']:.4f} | {summary['bytes'] / 1024:.1f} KiB | "
          f"{summary['dense_float32_bytes'] / 1024:.1f} KiB | "
          f"{summary['bytes'] / summary['dense_float32_bytes']:.2f}x | {expected:.4f} | "
          f"{accuracy:.4f} | {accuracy == expected} |")


if __name__ == "__main__":
  main()
