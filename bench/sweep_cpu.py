#!/usr/bin/env python
"""Sweep of XLA:CPU flags and model formulations for the project's train step.

XLA_FLAGS is read once, when JAX starts its backend, so every setting runs in its own
`bench/bench_step.py` subprocess. Settings are interleaved (each round runs every setting once,
the order rotated from round to round) and repeated for `--rounds` rounds; each setting's speed
is reported as the median over rounds of its images/s divided by the default's images/s in the
same round, which cancels most of the drift of a shared machine.

Numerical safety: with `--check_steps N` (default 20), the first round also records each
setting's loss over N steps from the same initialisation on the same data and compares it with
the default's (max relative difference over the N losses); a setting is "same" if that is at most
`--tol` (default 1e-4). The `default#2` setting (identical to the default, separate process) is
the control: its timing ratio shows the noise floor, its loss difference the run-to-run floor.

Run from the repository root, e.g.:

  python bench/sweep_cpu.py --model resnet20 --rounds 3 --out /tmp/sweep_resnet20.json
  python bench/sweep_cpu.py --settings default,onednn,bf16 --rounds 1 --check_steps 0
  python bench/sweep_cpu.py --list
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_step.py")

# name -> (XLA_FLAGS, extra bench_step.py arguments, description)
SETTINGS = {
    "default": ("", [], "jax 0.10.2 defaults (YNNPACK conv fusions on, Eigen elsewhere)"),
    "default#2": ("", [], "control: the default again, in another process"),
    # XLA:CPU flags that exist in jaxlib 0.10.2 (XLA_FLAGS=--help lists them).
    "onednn": ("--xla_cpu_use_onednn=true", [], "oneDNN thunks for matmul/conv fusions"),
    "onednn_custom_call": ("--xla_cpu_experimental_onednn_custom_call=true", [],
                           "oneDNN custom-call thunks"),
    "no_xnnpack": ("--xla_cpu_use_xnnpack=false", [], "XNNPACK off"),
    "xnn_fusion_all": ("--xla_cpu_experimental_xnn_fusion_type=dot,eltwise,reduce", [],
                       "XNNPACK fusions for dot, eltwise, reduce"),
    "xnn_graph_greedy": ("--xla_cpu_experimental_xnn_graph_fusion_mode="
                         "XNN_GRAPH_FUSION_MODE_GREEDY", [], "XnnGraphFusion pass, greedy"),
    "ynn_fusion_more": ("--xla_cpu_experimental_ynn_fusion_type=+eltwise,+reduce", [],
                        "YNNPACK fusions also started from eltwise/reduce ops"),
    "single_thread_eigen": ("--xla_cpu_multi_thread_eigen=false", [],
                            "single-threaded Eigen calls"),
    "fast_math": ("--xla_cpu_enable_fast_math=true", [], "unsafe fast math"),
    "opt_fast_runtime": ("--xla_cpu_opt_preset=CPU_OPT_PRESET_FAST_RUNTIME", [],
                         "optimisation preset FAST_RUNTIME"),
    "vector_512": ("--xla_cpu_prefer_vector_width=512", [], "LLVM prefers 512-bit vectors"),
    "sched_concurrency": ("--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_CONCURRENCY_OPTIMIZED",
                          [], "concurrency-optimised HLO scheduler"),
    "tiling_propagation": ("--xla_cpu_experimental_enable_tiling_propagation=true", [],
                           "experimental tiling propagation"),
    "no_thunk_runtime": ("--xla_cpu_use_thunk_runtime=false", [],
                         "deprecated flag (expected no-op)"),
    # Formulations (same flags as the default).
    "bf16": ("", ["--dtype", "bfloat16"], "model compute dtype bfloat16"),
    "bf16_onednn": ("--xla_cpu_use_onednn=true", ["--dtype", "bfloat16"],
                    "bfloat16 compute + oneDNN"),
    "precision_highest": ("", ["--matmul_precision", "highest"],
                          "jax_default_matmul_precision=highest"),
    "precision_bf16": ("", ["--matmul_precision", "bfloat16"],
                       "jax_default_matmul_precision=bfloat16"),
    "no_donate": ("", ["--donate", "0"], "train state not donated"),
    "nchw": ("", ["--variant", "nchw"], "convs in NCHW layout (bench-only model)"),
    "bn_two_pass": ("", ["--variant", "bn_two_pass"],
                    "BatchNorm(use_fast_variance=False) (bench-only model)"),
}


def run_one(name, args, check_steps, timeout):
  flags, extra, _ = SETTINGS[name]
  env = dict(os.environ)
  env["XLA_FLAGS"] = flags
  with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
    out = f.name
  cmd = [sys.executable, BENCH, "--model", args.model, "--batch_size", str(args.batch_size),
         "--repeats", str(args.repeats), "--warmup", str(args.warmup),
         "--epoch_steps", str(args.epoch_steps), "--epoch_repeats", "1", "--epoch_form", "scan",
         "--check_steps", str(check_steps), "--json", out, "--quiet", *extra]
  t0 = time.perf_counter()
  try:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=os.path.dirname(os.path.dirname(BENCH)))
  except subprocess.TimeoutExpired:
    return {"error": f"timeout after {timeout}s"}
  wall = time.perf_counter() - t0
  if proc.returncode != 0:
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"error": f"rc={proc.returncode}: " + " | ".join(tail)}
  with open(out) as f:
    result = json.load(f)
  os.unlink(out)
  result["wall_s"] = wall
  return result


def max_rel_diff(a, b):
  return max(abs(x - y) / max(abs(y), 1e-12) for x, y in zip(a, b))


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--model", default="resnet20")
  p.add_argument("--batch_size", type=int, default=128)
  p.add_argument("--settings", default="all", help="comma-separated names, or 'all'")
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--repeats", type=int, default=6, help="timed steps per run")
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--epoch_steps", type=int, default=0,
                 help="also time the lax.scan epoch form with this many steps (0 = skip)")
  p.add_argument("--check_steps", type=int, default=20,
                 help="loss-trajectory steps recorded in the first round (0 = no check)")
  p.add_argument("--tol", type=float, default=1e-4)
  p.add_argument("--timeout", type=int, default=600, help="seconds per run")
  p.add_argument("--out", default="", help="write all results to this JSON file")
  p.add_argument("--list", action="store_true", help="list the settings and exit")
  args = p.parse_args()

  if args.list:
    for name, (flags, extra, desc) in SETTINGS.items():
      print(f"{name:20s} {desc}\n{'':20s} XLA_FLAGS={flags!r} args={extra}")
    return
  names = list(SETTINGS) if args.settings == "all" else args.settings.split(",")
  unknown = [n for n in names if n not in SETTINGS]
  if unknown:
    raise SystemExit(f"unknown settings {unknown}; see --list")
  if "default" in names:
    names.remove("default")
  names.insert(0, "default")

  runs = {n: [] for n in names}  # per round: result dict
  t_start = time.perf_counter()
  for r in range(args.rounds):
    order = names[r % len(names):] + names[: r % len(names)]
    for n in order:
      res = run_one(n, args, args.check_steps if r == 0 else 0, args.timeout)
      res["round"] = r
      runs[n].append(res)
      msg = res.get("error") or (f"{res['step']['images_per_s']:.1f} images/s, "
                                 f"compile {res['step']['lower_compile_s']:.1f}s")
      if "epoch" in res:
        msg += f", epoch {res['epoch']['images_per_s']:.1f} images/s"
      print(f"[round {r + 1}/{args.rounds}] {n:20s} {msg}", flush=True)

  # Summary.
  base_runs = {x["round"]: x for x in runs["default"] if "error" not in x}
  base_losses = next((x.get("check_losses") for x in runs["default"] if "check_losses" in x),
                     None)
  summary = []
  for n in names:
    ok = [x for x in runs[n] if "error" not in x]
    row = {"setting": n, "XLA_FLAGS": SETTINGS[n][0], "args": " ".join(SETTINGS[n][1]),
           "description": SETTINGS[n][2], "runs": len(ok)}
    if not ok:
      row["error"] = runs[n][0].get("error")
      summary.append(row)
      continue
    ratios = [x["step"]["images_per_s"] / base_runs[x["round"]]["step"]["images_per_s"]
              for x in ok if x["round"] in base_runs]
    row.update(
        images_per_s=statistics.median(x["step"]["images_per_s"] for x in ok),
        ratio=statistics.median(ratios) if ratios else None,
        ratios=ratios,
        compile_s=statistics.median(x["step"]["lower_compile_s"] for x in ok))
    if all("epoch" in x for x in ok):
      row["epoch_images_per_s"] = statistics.median(x["epoch"]["images_per_s"] for x in ok)
      eratios = [x["epoch"]["images_per_s"] / base_runs[x["round"]]["epoch"]["images_per_s"]
                 for x in ok if x["round"] in base_runs and "epoch" in base_runs[x["round"]]]
      row["epoch_ratio"] = statistics.median(eratios) if eratios else None
      row["epoch_compile_s"] = statistics.median(x["epoch"]["lower_compile_s"] for x in ok)
    losses = next((x.get("check_losses") for x in ok if "check_losses" in x), None)
    if losses and base_losses:
      d = max_rel_diff(losses, base_losses)
      row.update(loss_max_rel_diff=d, same_losses=d <= args.tol,
                 final_loss=losses[-1])
    summary.append(row)

  print(f"\n{args.model} b{args.batch_size}: {args.rounds} round(s), {args.repeats} timed steps "
        f"per run, total {time.perf_counter() - t_start:.0f}s wall")
  hdr = "| setting | images/s (median) | ratio to default (median of rounds) | compile s |"
  sep = "|---|---|---|---|"
  if args.epoch_steps:
    hdr += " scan epoch images/s | epoch ratio |"
    sep += "---|---|"
  if args.check_steps:
    hdr += f" loss max rel diff ({args.check_steps} steps) | same (tol {args.tol:g}) |"
    sep += "---|---|"
  print(hdr + "\n" + sep)
  for row in summary:
    if "error" in row:
      print(f"| {row['setting']} | error: {row['error'][:120]} |")
      continue
    line = (f"| {row['setting']} | {row['images_per_s']:.1f} | "
            f"{row['ratio']:.3f} ({', '.join(f'{x:.2f}' for x in row['ratios'])}) | "
            f"{row['compile_s']:.1f} |")
    if args.epoch_steps:
      er = row.get("epoch_ratio")
      line += (f" {row.get('epoch_images_per_s', float('nan')):.1f} | "
               f"{er if er is None else f'{er:.3f}'} |")
    if args.check_steps:
      d = row.get("loss_max_rel_diff")
      line += (f" {'n/a' if d is None else f'{d:.1e}'} | "
               f"{'n/a' if d is None else ('yes' if row['same_losses'] else 'NO')} |")
    print(line)
  if args.out:
    with open(args.out, "w") as f:
      json.dump({"args": vars(args), "summary": summary, "runs": runs}, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
