#!/usr/bin/env python
"""The claims report (issue 14): the two papers' qualitative claims, measured on fresh seeds.

  python bench/claims.py [--root=/tmp/claims] [--seeds=...] [--families=...] [--report-only]
                         [--out=bench]          (or: make claims)

Pre-registered protocol (fixed before any result on these seeds was seen):
- Confirmation seeds 1000-1009 (`SEEDS`), never used in an earlier study (those used seeds
  0-19). `--seeds` overrides them only for smoke tests; the report then says it is NOT the
  pre-registered protocol, and the README block is not updated.
- Data and model: the embedded MNIST-1D and its 1-D CNN (CPU), every run pruned to a final
  sparsity of 0.95, with the shipped configs unchanged. Runs go through
  `python -m sms_jax.sweep --config=<file> --seeds=<seeds> --strategies=<list> [--set k=v,...]
  --root=<root>/<family> --jobs=2`, one family (`FAMILIES`) per sweep:
    prune_retrain  configs/mnist1d.py               imp, imp_mx, sms
    gmp            configs/sms_gmp_mnist1d.py       gmp, gmp_mx, sms_gmp
    dpf            configs/sms_dpf_mnist1d.py       dpf, sms_dpf
    bimp           configs/bimp_mnist1d.py          bimp, sms_bimp
    random_start   configs/random_start_mnist1d.py  imp with init_mask.distribution =
                   balanced, pyramidal, er, uniform (random masks at density 0.3, then IMP to
                   0.95); the dense start is prune_retrain's imp of the same seed.
- Measure: final test accuracy (OOD accuracy for claim 5: the mean over the corrupted test
  sets of the last phase), paired by seed; the effect is the mean paired difference in
  percentage points with its standard error and 95% t interval (`sms_jax.compare.paired`).
  Claims 3 and 4 read sms's last phase record: the soup's test accuracy against the best
  candidate by validation accuracy, and against the mean of the candidates' test accuracies.
- Verdicts, from the 95% interval [lo, hi] of the difference d (claimed side first):
    d > 0 (claims 1-3, 5-8): supported if lo > 0, contradicted if hi < 0, else inconclusive.
    d < 0 (claim 10):        supported if hi < 0, contradicted if lo > 0, else inconclusive.
    d >= 0 (claim 4, non-inferiority, margin 0.1 point): supported if lo > -0.1,
                             contradicted if hi < -0.1, else inconclusive.
    within 1 point (claim 9, non-inferiority, margin 1 point): supported if lo > -1,
                             contradicted if hi < -1, else inconclusive.
  A claim with fewer than 2 paired seeds is "not measured", with the reason. Each claim has
  its own 95% interval; there is no correction for the number of claims (14 rows), so about
  one in 14 intervals may miss its true effect by chance.

Writes <out>/CLAIMS.md and <out>/claims.json, and replaces the block between
`<!-- claims:begin -->` and `<!-- claims:end -->` in README.md (only if both markers exist, and
only for the pre-registered protocol). `--report-only` runs nothing and analyses what is under
--root. The sweeps' output goes to <root>/<family>/sweep.log; their wall times to
<root>/timings.json.
"""

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import time
from typing import Any, NamedTuple, Sequence

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# bench/machine.py:
from machine import cpu_model  # pylint: disable=g-import-not-at-top,wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from sms_jax import compare  # pylint: disable=g-import-not-at-top,wrong-import-position

SEEDS = tuple(range(1000, 1010))  # Pre-registered confirmation seeds: do not change.
BEGIN, END = "<!-- claims:begin -->", "<!-- claims:end -->"
SUPPORTED, CONTRADICTED, INCONCLUSIVE, NOT_MEASURED = (
    "supported", "contradicted", "inconclusive", "not measured")


class Family(NamedTuple):
  """One sweep: a config file, its strategies and at most one swept key (`key`, `values`)."""
  config: str
  strategies: tuple[str, ...]
  key: str | None = None
  values: tuple[str, ...] = ()


FAMILIES = {
    "prune_retrain": Family("configs/mnist1d.py", ("imp", "imp_mx", "sms")),
    "gmp": Family("configs/sms_gmp_mnist1d.py", ("gmp", "gmp_mx", "sms_gmp")),
    "dpf": Family("configs/sms_dpf_mnist1d.py", ("dpf", "sms_dpf")),
    "bimp": Family("configs/bimp_mnist1d.py", ("bimp", "sms_bimp")),
    "random_start": Family("configs/random_start_mnist1d.py", ("imp",), "init_mask.distribution",
                           ("balanced", "pyramidal", "er", "uniform")),
}
# Wall seconds of one run alone on the 2-core CPU (bench/methods_mnist1d.md; random starts:
# about imp's), for the estimate printed before the runs.
RUN_SECONDS = {"imp": 21, "imp_mx": 31, "sms": 27, "gmp": 12, "gmp_mx": 37, "sms_gmp": 35,
               "dpf": 14, "sms_dpf": 52, "bimp": 23, "sms_bimp": 38}


class Claim(NamedTuple):
  """A claim: `a` − `b` (labels 'family/variant', see `values`) on `metric`, tested by `rule`
  ('greater', 'less', 'at_least' with margin 0.1 point, 'within_1' with margin 1 point)."""
  id: str
  statement: str
  a: str
  b: str
  rule: str
  metric: str = "test_accuracy"
  note: str = ""


CLAIMS = (
    Claim("1", "SMS beats IMP (final test accuracy)", "prune_retrain/sms",
          "prune_retrain/imp", "greater"),
    Claim("2", "SMS beats IMP given m times the retraining (equal compute)",
          "prune_retrain/sms", "prune_retrain/imp_mx", "greater",
          note="imp_mx retrains one model 40 epochs a phase, sms m = 4 candidates 10 each"),
    Claim("3", "the soup beats the best candidate chosen by validation accuracy (last phase)",
          "prune_retrain/sms:soup", "prune_retrain/sms:best_candidate", "greater"),
    Claim("4", "the soup is at least as good as the mean candidate (last phase)",
          "prune_retrain/sms:soup", "prune_retrain/sms:mean_candidate", "at_least"),
    Claim("5", "SMS's OOD accuracy is above IMP's (final, mean over the corrupted test sets)",
          "prune_retrain/sms", "prune_retrain/imp", "greater", metric="ood_accuracy"),
    Claim("6a", "SMS-GMP beats GMP given m times the training (equal compute)",
          "gmp/sms_gmp", "gmp/gmp_mx", "greater",
          note="gmp_mx: sms_gmp's 12 phases with one model trained 4 times longer"),
    Claim("6b", "SMS-GMP beats GMP", "gmp/sms_gmp", "gmp/gmp", "greater",
          note="not equal compute: sms_gmp trains m = 4 candidates after each of 12 mask updates"),
    Claim("7", "SMS-DPF beats DPF", "dpf/sms_dpf", "dpf/dpf", "greater",
          note="not equal compute: sms_dpf trains m = 4 candidates in each of 35 phases, "
               "about 4 times DPF's"),
    Claim("8", "SMS-BIMP beats BIMP", "bimp/sms_bimp", "bimp/bimp", "greater",
          note="both in mnist1d's 100-epoch budget per model (40 dense + 4 phases of 15); "
               "sms_bimp trains m = 4 candidates a phase: 40 + 4 x 4 x 15 = 280 model-epochs "
               "against 100"),
    Claim("9a", "a random balanced start ends within 1 point of the dense start",
          "random_start/imp:balanced", "prune_retrain/imp", "within_1"),
    Claim("9b", "a random pyramidal start ends within 1 point of the dense start",
          "random_start/imp:pyramidal", "prune_retrain/imp", "within_1"),
    Claim("9c", "a random ER start ends within 1 point of the dense start",
          "random_start/imp:er", "prune_retrain/imp", "within_1"),
    Claim("10a", "a uniform random start is worse than a balanced one",
          "random_start/imp:uniform", "random_start/imp:balanced", "less"),
    Claim("10b", "a uniform random start is worse than the dense start",
          "random_start/imp:uniform", "prune_retrain/imp", "less"),
)
MARGINS = {"greater": 0.0, "less": 0.0, "at_least": -0.1, "within_1": -1.0}  # Points.
RULE_TEXT = {"greater": "d > 0", "less": "d < 0", "at_least": "d ≥ 0 (margin 0.1)",
             "within_1": "d > −1 (margin)"}


def verdict(ci95: Sequence[float] | None, rule: str) -> str:
  """The verdict of a difference's 95% interval `ci95` = [lo, hi] (points) under `rule`
  (module docstring); INCONCLUSIVE for an interval that holds the boundary, NOT_MEASURED
  without an interval."""
  if ci95 is None:
    return NOT_MEASURED
  lo, hi = ci95
  bound = MARGINS[rule]
  if rule == "less":
    return SUPPORTED if hi < bound else CONTRADICTED if lo > bound else INCONCLUSIVE
  return SUPPORTED if lo > bound else CONTRADICTED if hi < bound else INCONCLUSIVE


def run_dir(family: str, seed: int, strategy: str, value: str | None = None) -> str:
  """A run's workdir relative to --root, in the sweep's layout."""
  key = FAMILIES[family].key
  return os.path.join(family, f"seed{seed}", strategy + (f",{key}={value}" if value else ""))


def expected_runs(families: Sequence[str], seeds: Sequence[int]) -> list[tuple[str, ...]]:
  """(family, seed, strategy, value or None, workdir relative to root) of every run."""
  return [(f, s, strategy, v, run_dir(f, s, strategy, v)) for f in families for s in seeds
          for strategy in FAMILIES[f].strategies for v in (FAMILIES[f].values or (None,))]


def sweep_command(family: str, seeds: Sequence[int], root: str, python: str = "python",
                  jobs: int = 2, quick: bool = False) -> list[str]:
  """The `python -m sms_jax.sweep` command of one family (`quick`: the configs' `:quick`
  variants, for smoke tests of this script only)."""
  fam = FAMILIES[family]
  contiguous = list(seeds) == list(range(seeds[0], seeds[0] + len(seeds)))
  cmd = [python, "-m", "sms_jax.sweep", f"--config={fam.config}{':quick' if quick else ''}",
         "--seeds=" + (f"{seeds[0]}:{seeds[-1] + 1}" if contiguous
                       else ",".join(str(s) for s in seeds)),
         f"--strategies={','.join(fam.strategies)}"]
  if fam.key:
    cmd.append(f"--set={fam.key}={','.join(fam.values)}")
  return cmd + [f"--root={os.path.join(root, family)}", f"--jobs={jobs}"]


def estimate_seconds(families: Sequence[str], seeds: Sequence[int], jobs: int = 2,
                     speedup: float = 1.4) -> float:
  """A rough wall-time estimate: the runs' alone times over an assumed `speedup` of `jobs`
  processes on 2 cores (random starts at imp's time)."""
  total = sum(RUN_SECONDS[strategy] for f, _, strategy, _, _ in expected_runs(families, seeds))
  return total / (speedup if jobs > 1 else 1.0)


def collect(root: str, families: Sequence[str], seeds: Sequence[int]
            ) -> dict[str, dict[str, Any]]:
  """{'family/strategy[:value]': {seed: results}} of the finished runs of `seeds` under `root`,
  found by their config (strategy, seed, the family's key), so a workdir's name does not
  matter."""
  found: dict[str, dict[int, Any]] = {}
  for family in families:
    fam = FAMILIES[family]
    runs, _ = compare.find_runs([os.path.join(root, family)])
    for _, results in runs:
      flat = compare.flatten(results["config"])
      if flat.get("strategy") not in fam.strategies or flat.get("seed") not in seeds:
        continue  # A shared pretraining run, another seed's, or something foreign.
      label = f"{family}/{flat['strategy']}"
      if fam.key:
        label += f":{flat.get(fam.key)}"
      found.setdefault(label, {})[int(flat["seed"])] = results
  return found


def values(runs: dict[str, dict[int, Any]], label: str, metric: str) -> dict[int, float]:
  """{seed: value} of `label` ('family/variant' with an optional ':soup', ':best_candidate',
  ':mean_candidate' for the last phase's records; else the run's final point) on `metric`."""
  name, _, part = label.partition(":")
  if part in ("soup", "best_candidate", "mean_candidate"):
    out = {}
    for seed, results in runs.get(name, {}).items():
      last = (results.get("phases") or [{}])[-1]
      if part == "mean_candidate" and last.get("candidates"):
        out[seed] = float(np.mean([c["test_accuracy"] for c in last["candidates"]]))
      elif part != "mean_candidate" and last.get(part):
        out[seed] = last[part]["test_accuracy"]
    return out
  finals = {seed: compare.points(results)[-1][metric]
            for seed, results in runs.get(label, {}).items()}
  return {seed: value for seed, value in finals.items() if value is not None}


def measure(claim: Claim, runs: dict[str, dict[int, Any]], measured: Sequence[str]
            ) -> dict[str, Any]:
  """The claim's paired difference a − b in points (n, mean, se, ci95, ahead, tied, seeds),
  its verdict and, when not measured, why."""
  out = {**claim._asdict(), "rule_text": RULE_TEXT[claim.rule]}
  need = {label.split("/")[0] for label in (claim.a, claim.b)}
  missing = sorted(need - set(measured))
  a, b = values(runs, claim.a, claim.metric), values(runs, claim.b, claim.metric)
  d = compare.paired(a, b, higher_better=claim.rule != "less") if a and b else None
  if missing:
    reason = f"family {', '.join(missing)} not run"
  elif not a or not b:
    reason = (f"no finished run of {claim.a if not a else claim.b} with {claim.metric} "
              "(see failed or missing runs)")
  elif d["n"] < 2:
    reason = f"{d['n']} paired seed(s); an interval needs 2"
  else:
    reason = None
  if reason is not None:
    return {**out, "verdict": NOT_MEASURED, "reason": reason, "n": d["n"] if d else 0}
  scaled = {"n": d["n"], "seeds": d["seeds"], "ahead": d["ahead"], "tied": d["tied"],
            "mean": 100 * d["mean"], "se": 100 * d["se"],
            "ci95": [100 * d["ci95"][0], 100 * d["ci95"][1]]}
  return {**out, **scaled, "verdict": verdict(scaled["ci95"], claim.rule), "reason": None}


def family_table(runs: dict[str, dict[int, Any]], family: str) -> list[dict[str, Any]]:
  """Per variant of `family`: the summary (n, mean, se; fractions) of final test accuracy."""
  return [{"variant": label.split("/", 1)[1],
           **compare.summary(list(values(runs, label, "test_accuracy").values()))}
          for label in sorted(runs) if label.split("/")[0] == family]


def config_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
  """'key: a vs b' for each flattened config key that differs (not seed, pretrained,
  checkpoint.*, dataset.data_dir)."""
  fa, fb = compare.flatten(a), compare.flatten(b)
  return [f"{k}: {fa.get(k)!r} vs {fb.get(k)!r}" for k in sorted(set(fa) | set(fb))
          if not k.startswith(compare.NOT_GROUPING) and fa.get(k) != fb.get(k)]


def _sweep_rows(root: str, family: str) -> dict[tuple[int, str], dict[str, Any]]:
  """{(seed, run name): row} of the family's `sweep.json` (status, exit code, ...), or {}."""
  path = os.path.join(root, family, "sweep.json")
  if not os.path.isfile(path):
    return {}
  with open(path) as f:
    return {(row["seed"], row["name"]): row for row in json.load(f).get("runs", [])}


def failures(root: str, families: Sequence[str], seeds: Sequence[int]) -> list[dict[str, Any]]:
  """Each expected run without results.json, and each shared pretraining the sweep did not
  finish: family, seed, name, workdir, status (the sweep's: failed, blocked, interrupted,
  pending; else 'not run'), exit code, log (the run's `logs/seed<k>_<name>.log`, else the
  family's sweep.log, else None) and the log's last lines."""
  out = []
  for family in families:
    rows = _sweep_rows(root, family)
    names = {(seed, os.path.basename(rel)) for _, seed, _, _, rel in
             expected_runs([family], seeds)}
    names |= {key for key, row in rows.items() if key[1].startswith("pretrain")
              and key[0] in seeds and row["status"] not in ("done", "skipped")}
    for seed, name in sorted(names):
      path = os.path.join(root, family, f"seed{seed}", name)
      if os.path.exists(os.path.join(path, "results.json")):
        continue
      row = rows.get((seed, name), {})
      logs = [p for p in (os.path.join(root, family, "logs", f"seed{seed}_{name}.log"),
                          os.path.join(root, family, "sweep.log")) if os.path.isfile(p)]
      out.append({"family": family, "seed": seed, "name": name, "workdir": path,
                  "status": row.get("status", "not run"), "exit_code": row.get("exit_code"),
                  "log": logs[0] if logs else None, "tail": _tail(logs[0]) if logs else ""})
  return out


def _tail(path: str, lines: int = 12) -> str:
  with open(path, errors="replace") as f:
    return "".join(f.readlines()[-lines:])


def analyse(root: str, families: Sequence[str], seeds: Sequence[int], quick: bool = False
            ) -> dict[str, Any]:
  """Everything the report shows, from the runs under `root` (no runs started); `quick`: the
  runs used the configs' `:quick` variants (not the protocol)."""
  runs = collect(root, families, seeds)
  out = {"seeds": list(seeds), "preregistered": tuple(seeds) == SEEDS and not quick and
         set(families) == set(FAMILIES), "families": list(families), "quick": quick,
         "claims": [measure(c, runs, families) for c in CLAIMS],
         "tables": {f: family_table(runs, f) for f in families},
         "failed": failures(root, families, seeds), "refusals": {}, "start_differences": None}
  for family in families:
    members = [(label, r) for label, by_seed in runs.items() if label.startswith(family + "/")
               or (family == "random_start" and label == "prune_retrain/imp")  # Claims 9, 10b.
               for r in by_seed.values()]
    out["refusals"][family] = compare.refusal(members) if members else None
  rand = runs.get("random_start/imp:balanced", {})
  dense = runs.get("prune_retrain/imp", {})
  common = sorted(set(rand) & set(dense))
  if common:
    out["start_differences"] = config_differences(rand[common[0]]["config"],
                                                  dense[common[0]]["config"])
  return out


def _percent(s: dict[str, Any]) -> str:
  """'mean ± se' in % of a summary of fractions."""
  if s["mean"] is None:
    return "n/a"
  return f"{100 * s['mean']:.2f} ± " + ("n/a" if s["se"] is None else f"{100 * s['se']:.2f}")


def _pts(mean: float, se: float) -> str:
  return f"{mean:+.2f} ± {se:.2f}"


def claims_table(result: dict[str, Any], short: bool = False) -> list[str]:
  """The claims as markdown table lines (short: without the note and the seeds ahead)."""
  head = (["| claim | paper's statement | measured a − b (points) | 95% interval | verdict |",
           "|---|---|---|---|---|"] if short else
          ["| claim | paper's statement | compared (a − b) | rule | measured (points, mean ± s.e.) "
           "| 95% interval | seeds ahead / n | verdict |", "|---|---|---|---|---|---|---|---|"])
  lines = []
  for c in result["claims"]:
    if c["verdict"] == NOT_MEASURED:
      effect, ci, ahead, verdict_text = "—", "—", "—", f"not measured ({c['reason']})"
    else:
      effect, ci = _pts(c["mean"], c["se"]), f"[{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}]"
      ahead, verdict_text = f"{c['ahead']} / {c['n']}", f"**{c['verdict']}**"
    metric = "" if c["metric"] == "test_accuracy" else f" ({c['metric']})"
    statement = c["statement"] + ("" if short or not c["note"] else f" — {c['note']}")
    if short:
      lines.append(f"| {c['id']} | {statement} | {effect} | {ci} | {verdict_text} |")
    else:
      lines.append(f"| {c['id']} | {statement} | {c['a']} − {c['b']}{metric} | "
                   f"{c['rule_text']} | {effect} | {ci} | {ahead} | {verdict_text} |")
  return head + lines


def markdown(result: dict[str, Any], header: dict[str, Any]) -> str:
  """bench/CLAIMS.md: header, protocol, claims table, per-family tables, failed runs."""
  lines = ["# The papers' claims, measured (issue 14)", "",
           f"Generated by `python bench/claims.py` ({header['date']}, commit {header['commit']}, "
           f"{header['machine']}, JAX on the CPU). Total wall time of the runs: "
           f"{header['wall']}.", ""]
  if not result["preregistered"]:
    lines += [f"**This is NOT the pre-registered protocol**: seeds {result['seeds']}, families "
              f"{', '.join(result['families'])}"
              + (", the configs' `:quick` variants" if result.get("quick") else "") +
              " (a smoke test or partial run).", ""]
  lines += ["Sweep commands (as run from the repository root, `python` being the "
            "environment's, with JAX_PLATFORMS=cpu):", "", "```"]
  lines += header["commands"] + ["```", "", "## Protocol (pre-registered)", "", "```",
                                 protocol(), "```", "",
                                 "## Claims", ""]
  lines += claims_table(result)
  lines += ["", "Differences are paired by seed, in percentage points of accuracy; the 95% "
            "interval is the t interval of the mean difference; 'seeds ahead' counts seeds "
            "where a is on the claimed side of b (for claim 10, below).", ""]
  if result["start_differences"] is not None:
    diff = result["start_differences"]
    lines += ["Random start against dense start (claims 9, 10b): the runs' configs differ in "
              + (", ".join(f"`{d}`" for d in diff) if diff else "nothing") +
              " (keys not compared: the seed, `pretrained`, `checkpoint.*`, "
              "`dataset.data_dir`). Both start from a shared pretraining run of their seed: "
              "the dense start from `prune_retrain/seed<k>/pretrain` (dense, 60 epochs), a "
              "random start from `random_start/seed<k>/pretrain,init_mask.distribution=<d>` "
              "(60 epochs from scratch inside its random mask at density 0.3).", ""]
  lines += ["## Final test accuracy per family (%, mean ± s.e. over seeds)", ""]
  for family, rows in result["tables"].items():
    fam = FAMILIES[family]
    lines += [f"### {family} (`{fam.config}`)", "", "| variant | n | final test accuracy % |",
              "|---|---|---|"]
    lines += [f"| {r['variant']} | {r['n']} | {_percent(r)} |" for r in rows] or [
        "| (no finished runs) | 0 | — |"]
    if result["refusals"].get(family):
      lines.append(f"\nWarning: {result['refusals'][family]}")
    lines.append("")
  lines += ["## Failed or missing runs", ""]
  if not result["failed"]:
    lines += ["None: every run of the protocol finished.", ""]
  for fail in result["failed"]:
    code = "" if fail["exit_code"] is None else f", exit code {fail['exit_code']}"
    lines += [f"- `{fail['workdir']}`: {fail['status']}{code}; log: "
              + (f"`{fail['log']}`" if fail["log"] else "none found")]
    if fail["tail"]:
      lines += ["", "  ```", *("  " + line for line in fail["tail"].rstrip().splitlines()),
                "  ```"]
  return "\n".join(lines).rstrip() + "\n"


def protocol() -> str:
  """The pre-registered protocol: its paragraph of the module docstring."""
  return "Pre-registered protocol" + __doc__.split("Pre-registered protocol")[1].split(
      "Writes <out>")[0].rstrip()


def readme_block(result: dict[str, Any], header: dict[str, Any]) -> str:
  """The README's short results block (what goes between the markers)."""
  return "\n".join(
      [f"Measured by `make claims` on {len(result['seeds'])} fresh seeds "
       f"({result['seeds'][0]}-{result['seeds'][-1]}, pre-registered), MNIST-1D, 95% sparsity, "
       f"{header['date']}, commit {header['commit']}; differences a − b in accuracy points, "
       "paired by seed (details, rules and per-method tables: [bench/CLAIMS.md]"
       "(bench/CLAIMS.md)).", ""] + claims_table(result, short=True)) + "\n"


def replace_block(text: str, block: str) -> str | None:
  """`text` with what lies between BEGIN and END replaced by `block`; None unless both markers
  are there once each, BEGIN first."""
  if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
    return None
  head, rest = text.split(BEGIN)
  return head + BEGIN + "\n" + block.rstrip("\n") + "\n" + END + rest.split(END, 1)[1]


def update_readme(path: str, block: str) -> bool:
  """Replaces the block between the markers in the file at `path`; False (file unchanged) if
  it lacks them."""
  if not os.path.isfile(path):
    return False
  with open(path) as f:
    text = f.read()
  new = replace_block(text, block)
  if new is None:
    return False
  if new != text:
    with open(path, "w") as f:
      f.write(new)
  return True


def run_families(families: Sequence[str], seeds: Sequence[int], root: str,
                 quick: bool = False) -> dict[str, float]:
  """Runs each family's sweep (output to <root>/<family>/sweep.log); returns {family: wall s,
  summed over every invocation under `root` (a rerun resumes)}, kept in <root>/timings.json.
  A failing sweep does not stop the others."""
  timings = _timings(root)
  for family in families:
    cmd = sweep_command(family, seeds, root, python=sys.executable, quick=quick)
    os.makedirs(os.path.join(root, family), exist_ok=True)
    print(f"claims: {family}: {shlex.join(cmd)}", flush=True)
    tic = time.perf_counter()
    with open(os.path.join(root, family, "sweep.log"), "a") as log:
      code = subprocess.call(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                             env=dict(os.environ, JAX_PLATFORMS="cpu"))
    timings[family] = timings.get(family, 0.0) + time.perf_counter() - tic  # Over resumes.
    print(f"claims: {family} done in {timings[family]:.0f} s (exit code {code})", flush=True)
    with open(os.path.join(root, "timings.json"), "w") as f:
      json.dump(timings, f, indent=1)
  return timings


def _timings(root: str) -> dict[str, float]:
  path = os.path.join(root, "timings.json")
  if os.path.isfile(path):
    with open(path) as f:
      return json.load(f)
  return {}


def _commit() -> str:
  try:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def _seeds(text: str) -> list[int]:
  """'1000:1010' (a range) or '1,2,5'."""
  if ":" in text:
    lo, hi = text.split(":")
    return list(range(int(lo), int(hi)))
  return [int(s) for s in text.split(",") if s]


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the protocol (unless --report-only), writes the report; returns the exit code."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--root", default="/tmp/claims", help="where the runs live")
  parser.add_argument("--seeds", default=None,
                      help="smoke tests only: seeds (a:b or a,b,...) instead of 1000-1009")
  parser.add_argument("--families", default=",".join(FAMILIES),
                      help=f"comma-separated subset of {', '.join(FAMILIES)}")
  parser.add_argument("--report-only", action="store_true", help="run nothing, analyse --root")
  parser.add_argument("--quick", action="store_true",
                      help="smoke tests only: the configs' :quick variants")
  parser.add_argument("--out", default=os.path.join(ROOT, "bench"),
                      help="folder for CLAIMS.md and claims.json")
  parser.add_argument("--readme", default=os.path.join(ROOT, "README.md"),
                      help="README whose marked block is replaced (pre-registered runs only)")
  args = parser.parse_args(argv)
  families = [f for f in args.families.split(",") if f]
  unknown = [f for f in families if f not in FAMILIES]
  if unknown:
    parser.error(f"--families={args.families} is not allowed: {unknown[0]!r} is not one of "
                 f"{', '.join(FAMILIES)}")
  try:
    seeds = list(SEEDS) if args.seeds is None else _seeds(args.seeds)
  except ValueError:
    parser.error(f"--seeds={args.seeds} is not allowed; allowed: a:b or a,b,... (integers)")
  if not seeds:
    parser.error(f"--seeds={args.seeds} is not allowed: it names no seed")
  if not args.report_only:
    print(f"claims: {len(expected_runs(families, seeds))} runs, estimated "
          f"{estimate_seconds(families, seeds) / 60:.0f} min", flush=True)
    run_families(families, seeds, args.root, args.quick)
  timings = _timings(args.root)
  wall = sum(timings.get(f, 0.0) for f in families)
  header = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": _commit(), "machine": cpu_model(),
            "wall": f"{wall / 60:.1f} min (" + ", ".join(
                f"{f} {timings[f] / 60:.1f}" for f in families if f in timings) + ")"
                    if timings else "not recorded (no sweep run under this root)",
            "commands": [shlex.join(sweep_command(f, seeds, args.root, quick=args.quick))
                         for f in families]}
  result = analyse(args.root, families, seeds, args.quick)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "CLAIMS.md"), "w") as f:
    f.write(markdown(result, header))
  with open(os.path.join(args.out, "claims.json"), "w") as f:
    json.dump({"header": header, **result}, f, indent=1)
  if result["preregistered"]:
    updated = update_readme(args.readme, readme_block(result, header))
    print(f"claims: README block {'updated' if updated else 'not updated (no markers)'}")
  for c in result["claims"]:
    print(f"claims: {c['id']:>3} {c['verdict']}")
  print(f"claims: wrote {os.path.join(args.out, 'CLAIMS.md')}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
