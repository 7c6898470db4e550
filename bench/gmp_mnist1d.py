"""GMP against SMS-GMP on MNIST-1D (configs/sms_gmp_mnist1d.py: 60 epochs, to 0.95 sparsity
between epochs 10 and 45).

Usage: python bench/gmp_mnist1d.py VARIANT SEEDS...   (runs sequentially)
       python bench/gmp_mnist1d.py --table           (prints the markdown table)
VARIANT is one of VARIANTS: `gmp` (mask updated every epoch inside the step) or
`sms_gmp_n<phases>_m<m>` (mask updated at <phases> phase starts, <m> candidates souped per
phase; m = 1 is the same coarse schedule without a soup). Each run is the command below in a
fresh workdir /tmp/gmp_bench/<variant>_s<seed>; records go to /tmp/gmp_bench/records.jsonl.
  JAX_PLATFORMS=cpu python -m sms_jax.main --config=configs/sms_gmp_mnist1d.py --workdir=W
    --config.seed=S <the variant's overrides>
"""

import json
import os
import shutil
import sys

import numpy as np

from machine import run_experiment  # bench/machine.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TMP = "/tmp/gmp_bench"
RECORDS = os.path.join(TMP, "records.jsonl")
VARIANTS = {
    "gmp": ["--config.strategy=gmp"],
    **{f"sms_gmp_n{n}_m{m}": ["--config.strategy=sms_gmp", f"--config.prune.n_phases={n}",
                              f"--config.soup.m={m}"] for n in (4, 7, 12) for m in (1, 4)},
}


def load():
  if not os.path.exists(RECORDS):
    return []
  with open(RECORDS) as f:
    return [json.loads(line) for line in f if line.strip()]


def run_one(variant, seed):
  if any(r["variant"] == variant and r["seed"] == seed for r in load()):
    return
  workdir = os.path.join(TMP, f"{variant}_s{seed}")
  shutil.rmtree(workdir, ignore_errors=True)
  cmd = [sys.executable, "-m", "sms_jax.main", "--config=configs/sms_gmp_mnist1d.py",
         f"--workdir={workdir}", f"--config.seed={seed}", *VARIANTS[variant]]
  res, wall = run_experiment(cmd, workdir, ROOT)
  rec = {"variant": variant, "seed": seed, "command": " ".join(["JAX_PLATFORMS=cpu"] + cmd),
         "final_test_accuracy": res["final"]["test_accuracy"],
         "final_sparsity": res["final"]["sparsity"], "wall_s": wall}
  with open(RECORDS, "a") as f:
    f.write(json.dumps(rec) + "\n")
  print(f"{variant} s{seed}: test {rec['final_test_accuracy']:.4f} sparsity "
        f"{rec['final_sparsity']:.5f} wall {wall:.1f} s", flush=True)


def table():
  recs = load()
  seeds = sorted({r["seed"] for r in recs})
  lines = ["| variant | " + " | ".join(f"seed {s}" for s in seeds) +
           " | mean ± s.e. | final sparsity (min/max) | wall s (mean) |",
           "|---" * (len(seeds) + 4) + "|"]
  for variant in VARIANTS:
    rs = {r["seed"]: r for r in recs if r["variant"] == variant}
    if not rs:
      continue
    accs = np.asarray([r["final_test_accuracy"] for r in rs.values()])
    sp = [r["final_sparsity"] for r in rs.values()]
    se = accs.std(ddof=1) / np.sqrt(len(accs)) if len(accs) > 1 else float("nan")
    cells = [f"{rs[s]['final_test_accuracy']:.4f}" if s in rs else "-" for s in seeds]
    lines.append(f"| {variant} | " + " | ".join(cells) + f" | {accs.mean():.4f} ± {se:.4f} "
                 f"(n={len(accs)}) | {min(sp):.4f}/{max(sp):.4f} | "
                 f"{np.mean([r['wall_s'] for r in rs.values()]):.0f} |")
  return "\n".join(lines)


if __name__ == "__main__":
  if sys.argv[1] == "--table":
    print(table())
  else:
    assert sys.argv[1] in VARIANTS, (sys.argv[1], list(VARIANTS))
    os.makedirs(TMP, exist_ok=True)
    for seed in sys.argv[2:]:
      run_one(sys.argv[1], int(seed))
