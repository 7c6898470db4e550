"""The ResNet-20 train step on XLA:CPU with its library-fusion flags (issue 17 part 4).

Usage: python bench/cpu_conv_libraries.py [--rounds 2] [--repeats 5] [--json out.json]

This jaxlib's XLA:CPU can hand convolutions and dots to YNNPACK, XNNPACK or oneDNN
(`--xla_cpu_experimental_{ynn,xnn,onednn}_fusion_type=LIBRARY_FUSION_TYPE_...`, off by
default). Each variant runs `bench/bench_step.py --model resnet20` (batch 128, float32) in a
process of its own with those XLA_FLAGS, rounds alternating between variants; reports the
median images/s over rounds, the ratio to the default, and the largest difference of the
first 3 step losses from the default's (the variant computes the same step).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from machine import cpu_model  # bench/machine.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TYPE = "--xla_cpu_experimental_{}_fusion_type=LIBRARY_FUSION_TYPE_{}"
VARIANTS = {
    "default": "",
    "ynnpack conv": _TYPE.format("ynn", "INDIVIDUAL_CONVOLUTION"),
    "ynnpack conv+dot": _TYPE.format("ynn", "INDIVIDUAL_CONVOLUTION,LIBRARY_FUSION_TYPE_"
                                     "INDIVIDUAL_DOT"),
    "xnnpack conv": _TYPE.format("xnn", "INDIVIDUAL_CONVOLUTION"),
    "onednn conv": _TYPE.format("onednn", "INDIVIDUAL_CONVOLUTION"),
}


def run_variant(flags: str, repeats: int) -> dict:
  """bench_step.py's result for ResNet-20 under XLA_FLAGS=`flags`."""
  with tempfile.NamedTemporaryFile(suffix=".json") as out:
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=flags)
    subprocess.run([sys.executable, os.path.join(ROOT, "bench", "bench_step.py"),
                    "--model", "resnet20", "--repeats", str(repeats), "--warmup", "1",
                    "--epoch_steps", "0", "--check_steps", "3", "--quiet", "--json", out.name],
                   cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    with open(out.name) as f:
      return json.load(f)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--json", default="")
  args = parser.parse_args()
  runs = {name: [] for name in VARIANTS}
  for k in range(args.rounds):
    for name, flags in VARIANTS.items():
      try:
        result = run_variant(flags, args.repeats)
      except subprocess.CalledProcessError as error:
        runs[name].append({"error": error.stderr.strip().splitlines()[-1]})
        print(f"round {k + 1} {name}: failed: {runs[name][-1]['error']}", flush=True)
        continue
      runs[name].append({"images_per_s": result["step"]["images_per_s"],
                         "compile_s": result["step"]["compile_s"],
                         "check_losses": result["check_losses"]})
      print(f"round {k + 1} {name}: {result['step']['images_per_s']:.1f} images/s", flush=True)
  base = [r["check_losses"] for r in runs["default"] if "check_losses" in r][0]
  base_speed = statistics.median(r["images_per_s"] for r in runs["default"])
  rows = ["| variant | XLA_FLAGS | images/s (median) | vs default | compile s | max loss diff |",
          "|---|---|---|---|---|---|"]
  for name, flags in VARIANTS.items():
    good = [r for r in runs[name] if "images_per_s" in r]
    if not good:
      rows.append(f"| {name} | `{flags}` | failed: {runs[name][0]['error']} | | | |")
      continue
    speed = statistics.median(r["images_per_s"] for r in good)
    diff = max(abs(a - b) for a, b in zip(good[0]["check_losses"], base))
    rows.append(f"| {name} | `{flags or '(none)'}` | {speed:.1f} | {speed / base_speed:.2f}x | "
                f"{statistics.median(r['compile_s'] for r in good):.1f} | {diff:.1e} |")
  print(f"{cpu_model()}, {os.cpu_count()} cores\n" + "\n".join(rows))
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"machine": cpu_model(), "cores": os.cpu_count(), "runs": runs}, f, indent=1)


if __name__ == "__main__":
  main()
