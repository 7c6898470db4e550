"""Tunes the embedded SMS experiment (configs/mnist1d.py): soup gain over IMP across seeds.

Usage: python bench/tune_mnist1d.py VARIANT STRATEGY SEEDS...   (runs sequentially)
       python bench/tune_mnist1d.py --summary
VARIANT names a set of --config overrides (VARIANTS below). Each run goes to a fresh
/tmp/tune/<variant>_<strategy>_s<seed>; the dense pretraining checkpoint of a seed is copied
from the first finished run of that seed (identical train.* settings) so only the phases run.
Results (final test accuracy, per-phase soup/candidate/ensemble accuracies, wall time) are
appended to bench/tune_mnist1d_results.json.
"""

import json
import os
import shutil
import sys

from machine import run_experiment  # bench/machine.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench", "tune_mnist1d_results.json")
TMP = "/tmp/tune"
PY = sys.executable

# Round 1 ran at the then default goal sparsity 0.98; the default is now 0.95.
GOAL_098 = ["--config.prune.goal_sparsity=0.98"]
VARIANTS = {
    "base": [*GOAL_098],  # vary=seed, uniform, m=4, 10 epochs/phase
    "seed_wd": [*GOAL_098, "--config.soup.vary=seed,weight_decay"],
    "seed_lr": [*GOAL_098, "--config.soup.vary=seed,learning_rate"],
    "seed_wd_lr": [*GOAL_098, "--config.soup.vary=seed,weight_decay,learning_rate"],
    "greedy": [*GOAL_098, "--config.soup.method=greedy"],
    "seed_lr_greedy": [*GOAL_098, "--config.soup.vary=seed,learning_rate", "--config.soup.method=greedy"],
    "seed_wd_greedy": [*GOAL_098, "--config.soup.vary=seed,weight_decay", "--config.soup.method=greedy"],
    "ep15": [*GOAL_098, "--config.retrain.epochs_per_phase=15"],
    "ep15_seed_wd": [*GOAL_098, "--config.retrain.epochs_per_phase=15", "--config.soup.vary=seed,weight_decay"],
    "ep15_seed_lr": [*GOAL_098, "--config.retrain.epochs_per_phase=15", "--config.soup.vary=seed,learning_rate"],
    "ph5": [*GOAL_098, "--config.prune.n_phases=5"],
    "gs95": ["--config.prune.goal_sparsity=0.95"],
    "gs95_m8": ["--config.prune.goal_sparsity=0.95", "--config.soup.m=8"],
    "gs90": ["--config.prune.goal_sparsity=0.9"],
}
# Variants whose IMP run equals another's (imp ignores soup.*).
IMP_OF = {"base": "base", "seed_wd": "base", "seed_lr": "base", "seed_wd_lr": "base",
          "greedy": "base", "seed_lr_greedy": "base", "seed_wd_greedy": "base",
          "ep15": "ep15", "ep15_seed_wd": "ep15", "ep15_seed_lr": "ep15", "ph5": "ph5",
          "gs95": "gs95", "gs95_m8": "gs95", "gs90": "gs90"}


def load():
  if os.path.exists(OUT):
    with open(OUT) as f:
      return json.load(f)
  return {"runs": []}


def save(data):
  with open(OUT + ".tmp", "w") as f:  # One run per line.
    f.write('{"summary": ' + json.dumps(data.get("summary", {}), separators=(",", ":")) +
            ',\n "runs": [\n' + ",\n".join("  " + json.dumps(run, separators=(",", ":"))
                                            for run in data["runs"]) + "\n]}\n")
  os.replace(OUT + ".tmp", OUT)


def pretrain_source(seed):
  """A finished workdir of this seed holding checkpoints/pretrain, or None."""
  if not os.path.isdir(TMP):
    return None
  for name in sorted(os.listdir(TMP)):
    path = os.path.join(TMP, name, "checkpoints", "pretrain")
    if name.endswith(f"_s{seed}") and os.path.isdir(path) and os.path.exists(
        os.path.join(TMP, name, "results.json")):
      return path
  return None


def run_one(variant, strategy, seed, data, fresh_pretrain=False):
  if any(r["variant"] == variant and r["strategy"] == strategy and r["seed"] == seed
         for r in data["runs"]):
    return
  workdir = os.path.join(TMP, f"{variant}_{strategy}_s{seed}")
  shutil.rmtree(workdir, ignore_errors=True)
  src = None if fresh_pretrain else pretrain_source(seed)
  if src:
    shutil.copytree(src, os.path.join(workdir, "checkpoints", "pretrain"))
  cmd = [PY, "-m", "sms_jax.main", "--config=configs/mnist1d.py", f"--workdir={workdir}",
         f"--config.seed={seed}", f"--config.strategy={strategy}", *VARIANTS[variant]]
  res, wall = run_experiment(cmd, workdir, ROOT)
  phases = []
  for p in res["phases"]:
    if "model" in p:  # imp (m = 1): one retrained model, no soup, candidates or ensemble.
      phases.append({"phase": p["phase"], "sparsity": p["sparsity"],
                     "model_test": p["model"]["test_accuracy"]})
      continue
    cands = [c["test_accuracy"] for c in p["candidates"]]
    phases.append({"phase": p["phase"], "sparsity": p["sparsity"],
                   "soup_test": p["soup"]["test_accuracy"],
                   "soup_ingredients": p["soup"]["ingredients"],
                   "candidates_test": cands,
                   "candidates_hparams": [c["hparams"] for c in p["candidates"]],
                   "best_candidate_test": p["best_candidate"]["test_accuracy"],
                   "ensemble_test": p["ensemble"]["test_accuracy"]})
  rec = {"variant": variant, "strategy": strategy, "seed": seed, "overrides": VARIANTS[variant],
         "final_test_accuracy": res["final"]["test_accuracy"],
         "dense_test_accuracy": res["dense"]["test_accuracy"],
         "pretrain_reused": bool(src), "process_wall_s": wall,
         "results_wall_time_s": res.get("wall_time_s"), "phases": phases}
  data["runs"].append(rec)
  save(data)
  print(f"{variant:16s} {strategy} s{seed}: final {rec['final_test_accuracy']:.4f}  "
        f"dense {rec['dense_test_accuracy']:.4f}  wall {wall:.1f}s  reused={bool(src)}",
        flush=True)


def summary(data, seeds=range(5)):
  import numpy as np
  acc = {(r["variant"], r["strategy"], r["seed"]): r["final_test_accuracy"] for r in data["runs"]}
  out = {}
  for variant in VARIANTS:
    s = [acc.get((variant, "sms", k)) for k in seeds]
    i = [acc.get((IMP_OF[variant], "imp", k)) for k in seeds]
    pairs = [(a, b) for a, b in zip(s, i) if a is not None and b is not None]
    if not pairs:
      continue
    d = np.array([a - b for a, b in pairs])
    last = [r["phases"][-1] for r in data["runs"]
            if r["variant"] == variant and r["strategy"] == "sms" and r["seed"] in seeds]
    soup_gain = np.mean([p["soup_test"] - np.mean(p["candidates_test"]) for p in last])
    ens_gap = np.mean([p["ensemble_test"] - p["soup_test"] for p in last])
    se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
    out[variant] = {"n": len(d), "sms": float(np.mean([a for a, _ in pairs])),
                    "imp": float(np.mean([b for _, b in pairs])), "diff": float(d.mean()),
                    "se": float(se), "wins": int((d > 0).sum()), "ties": int((d == 0).sum()),
                    "soup_minus_mean_cand": float(soup_gain), "ens_minus_soup": float(ens_gap),
                    "diffs": d.tolist()}
    print(f"{variant:16s} n={len(d)} sms {out[variant]['sms']:.4f} imp {out[variant]['imp']:.4f}"
          f"  diff {d.mean()*100:+.2f} ± {se*100:.2f} pts  wins {(d > 0).sum()}/{len(d)}"
          f"  soup-cand {soup_gain*100:+.2f}  ens-soup {ens_gap*100:+.2f}"
          f"  {np.round(d*100, 1).tolist()}")
  return out


if __name__ == "__main__":
  data = load()
  if sys.argv[1] == "--summary":
    seeds = [int(s) for s in sys.argv[2:]] or list(range(5))
    summary(data, seeds)
  else:
    variant, strategy = sys.argv[1], sys.argv[2]
    for seed in sys.argv[3:]:
      run_one(variant, strategy, int(seed), data)
