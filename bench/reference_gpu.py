#!/usr/bin/env python
"""The SMS paper's models and methods on the current JAX backend (meant for a GPU): one command.

1. Train-step throughput of the reference code's networks at its batch size 128, float32 and
   bfloat16 (`bench/bench_step.py` per setting, synthetic CIFAR-shaped data, dropout on):
   resnet56 (10 classes), wrn22_2_d0.3, wrn22_10_d0.3 and wrn28_10_d0.3 (100 classes). From
   images/s it estimates one epoch of the 45,000 training images and the whole
   `configs/sms_cifar10.py` / `sms_cifar100.py` job (200 dense epochs + 3 phases x 10 epochs
   x m = 3 candidates, run one after another: a lower bound on the candidate work).
2. The pruning methods that issue 12 added, end to end on the embedded data with their
   `:quick` configs (`python -m sms_jax.main`): each must end at exactly its goal sparsity.

  python bench/reference_gpu.py --out /tmp/reference_gpu [--models resnet56] [--skip_runs]

Writes `<out>/reference_gpu.json` and `<out>/reference_gpu.md` (the table recorded in
bench/RESULTS.md). Needs jax, flax, optax, orbax-checkpoint, chex, ml_collections, tensorboardX and mnist1d
(a bare GPU machine may lack the last three: carry them as wheels).
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_IMAGES = 45_000  # CIFAR's 50,000 less the 10% validation hold-out.
# (model, classes, config): the reference's networks and the config that uses each.
MODELS = (("resnet56", 10, "sms_cifar10"), ("wrn22_2_d0.3", 100, "sms_cifar100:wrn22_2_d0.3"),
          ("wrn22_10_d0.3", 100, "sms_cifar100"), ("wrn28_10_d0.3", 100, "sms_cifar100:wrn28_10_d0.3"))
JOB_EPOCHS = 200 + 3 * 10 * 3  # dense + phases x epochs x candidates.
# (config, strategy): the methods added for the SMS paper, on the embedded data.
RUNS = (("configs/sms_dpf_mnist1d.py:quick", "dpf"), ("configs/sms_dpf_mnist1d.py:quick", "sms_dpf"),
        ("configs/sms_gmp_mnist1d.py:quick", "gmp_mx"), ("configs/bimp_mnist1d.py:quick", "bimp"),
        ("configs/bimp_mnist1d.py:quick", "sms_bimp"), ("configs/mnist1d.py:quick", "imp_avg_reprune"),
        ("configs/mnist1d.py:quick", "sms"))


def step_throughput(model: str, classes: int, dtype: str, out: str, repeats: int) -> dict:
  """bench_step.py's JSON for one model and dtype (its `error` when the process failed)."""
  path = os.path.join(out, f"step_{model}_{dtype}.json")
  cmd = [sys.executable, "bench/bench_step.py", "--model", model, "--num_classes", str(classes),
         "--batch_size", "128", "--repeats", str(repeats), "--dtype", dtype, "--json", path,
         "--quiet"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
  if proc.returncode:
    return {"error": proc.stderr.strip().splitlines()[-1:]}
  with open(path) as f:
    return json.load(f)


def method_run(config: str, strategy: str, out: str) -> dict:
  """One quick run of `strategy`: final accuracy and sparsity against its goal, wall time."""
  workdir = os.path.join(out, "runs", f"{strategy}")
  cmd = [sys.executable, "-m", "sms_jax.main", f"--config={config}", f"--workdir={workdir}",
         f"--config.strategy={strategy}"]
  tic = time.perf_counter()
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
  wall = time.perf_counter() - tic
  if proc.returncode:
    return {"config": config, "strategy": strategy, "error": proc.stderr.strip()[-800:]}
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  goal = results["config"]["prune"]["goal_sparsity"]
  return {"config": config, "strategy": strategy, "wall_s": wall,
          "test_accuracy": results["final"]["test_accuracy"],
          "sparsity": results["final"]["sparsity"], "goal_sparsity": goal,
          "platform": results["devices"]["platform"]}


def markdown(steps: list[dict], runs: list[dict], machine: dict) -> str:
  """The tables of the step throughputs and of the method runs."""
  lines = [f"Machine: {machine.get('device_kind')} ({machine.get('platform')}), jax "
           f"{machine.get('jax')}, flax {machine.get('flax')}.", "",
           "| model | dtype | images/s | compile s | epoch s (45k) | job h (est.) |",
           "| --- | --- | --- | --- | --- | --- |"]
  for s in steps:
    if "error" in s:
      lines.append(f"| {s['model']} | {s['dtype']} | failed: {s['error']} | | | |")
      continue
    ips = s["step"]["images_per_s"]
    epoch = TRAIN_IMAGES / ips
    lines.append(f"| {s['model']} | {s['dtype']} | {ips:,.0f} | {s['step']['lower_compile_s']:.1f} "
                 f"| {epoch:.1f} | {epoch * JOB_EPOCHS / 3600:.2f} |")
  lines += ["", "| method (quick config) | platform | final test accuracy | sparsity / goal | wall s |",
            "| --- | --- | --- | --- | --- |"]
  for r in runs:
    if "error" in r:
      lines.append(f"| {r['strategy']} ({r['config']}) | failed | {r['error'][-200:]!r} | | |")
      continue
    lines.append(f"| {r['strategy']} ({r['config']}) | {r['platform']} | {r['test_accuracy']:.3f} "
                 f"| {r['sparsity']:.5f} / {r['goal_sparsity']} | {r['wall_s']:.1f} |")
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--models", default="", help="comma-separated subset of the models")
  parser.add_argument("--dtypes", default="float32,bfloat16")
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--skip_runs", action="store_true", help="time the steps only")
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  chosen = args.models.split(",") if args.models else [m for m, _, _ in MODELS]
  steps, machine = [], {}
  for model, classes, config in MODELS:
    if model not in chosen:
      continue
    for dtype in args.dtypes.split(","):
      result = step_throughput(model, classes, dtype, args.out, args.repeats)
      machine = result.get("machine", machine)
      steps.append({"model": model, "dtype": dtype, "config": config, **result})
      print(json.dumps({k: steps[-1].get(k) for k in ("model", "dtype", "step", "error")}),
            flush=True)
  runs = []
  if not args.skip_runs:
    for config, strategy in RUNS:
      runs.append(method_run(config, strategy, args.out))
      print(json.dumps(runs[-1]), flush=True)
  with open(os.path.join(args.out, "reference_gpu.json"), "w") as f:
    json.dump({"steps": steps, "runs": runs, "machine": machine}, f, indent=1)
  table = markdown(steps, runs, machine)
  with open(os.path.join(args.out, "reference_gpu.md"), "w") as f:
    f.write(table)
  print(table)
  if any("error" in r for r in steps + runs) or any(
      abs(r["sparsity"] - r["goal_sparsity"]) > 1e-6 for r in runs):
    sys.exit("some steps or runs failed, or a run missed its goal sparsity (see above)")


if __name__ == "__main__":
  main()
