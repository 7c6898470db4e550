"""Compares finished runs: `python -m sms_jax.compare PATH... [--baseline=imp] [--out=DIR]`.

Each PATH is a run's workdir (holding `results.json`) or a folder searched recursively for
them; a folder with `config.json` but no `results.json` (unfinished or failed) is listed as
skipped. Runs are grouped by `config.strategy` plus every other config key whose value differs
between them (not `seed`, `checkpoint.*` or `dataset.data_dir`), e.g. `sms soup.m=4`, and paired
by `config.seed`. Runs of another dataset, model or `prune.goal_sparsity` are refused (one
line, exit code 2) before anything is written.

Per phase (matched by index; their target sparsities must agree within a group) and final:
mean ± standard error of test accuracy, test ECE and OOD accuracy (the mean over the phase's
corrupted test sets; the final value is the last phase's) per group, and the paired difference
of each group against the baseline over their common seeds: mean ± s.e., the 95% t interval and
how many seeds are ahead (higher accuracy, lower ECE) or tied. Runs without phases (`dense`,
`gmp`, `set`, `dpf`) have the final row only; on the plot they are one point at their final
sparsity (a dense run: 0). Writes compare.md (also printed), compare.json, compare.csv (one row
per group x phase x metric) and compare.png into --out (default: the first PATH if it is a
folder and only one is given, else the current directory).
"""

import csv
import io
import json
import math
import os
import sys
from typing import Any, Sequence

from absl import flags
import numpy as np

from sms_jax import report
from sms_jax.phases.evaluate import outcome
from sms_jax.tools import cli

METRICS = ("test_accuracy", "test_ece", "ood_accuracy")
HIGHER_IS_BETTER = {"test_accuracy": True, "test_ece": False, "ood_accuracy": True}
# Keys that must agree between compared runs (prefixes of flattened config keys).
MUST_AGREE = ("dataset.", "model.", "prune.goal_sparsity")
# Keys that do not define a group: the pairing key and where a run keeps or reads its files
# (`pretrained`: the run whose pretraining it shares, the same training by its check).
NOT_GROUPING = ("seed", "pretrained", "checkpoint.", "dataset.data_dir")
_ALLOWED = {"baseline": "a group label or a strategy with one group, e.g. imp",
            "out": "a folder for compare.md/.json/.csv/.png"}


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  """{'a.b': value} of a nested config dict."""
  flat = {}
  for key, value in config.items():
    if isinstance(value, dict):
      flat.update(flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def find_runs(paths: Sequence[str]) -> tuple[list[tuple[str, dict]], list[str]]:
  """([(run dir, results)], [skipped run dirs]) under `paths` (workdirs or folders), sorted."""
  runs, skipped = {}, set()
  for path in paths:
    for root, dirs, files in os.walk(path):
      dirs[:] = sorted(d for d in dirs if d not in ("checkpoints", "plots", "tensorboard"))
      if "results.json" in files:
        with open(os.path.join(root, "results.json")) as f:
          runs[root] = json.load(f)
        dirs[:] = []
      elif "config.json" in files:
        skipped.add(root)
  return sorted(runs.items()), sorted(skipped)


def refusal(runs: Sequence[tuple[str, dict]]) -> str | None:
  """One line naming a key that must agree but differs between the runs, with its values."""
  flats = [flatten(results["config"]) for _, results in runs]
  keys = sorted({key for flat in flats for key in flat
                 if key.startswith(MUST_AGREE) and not key.startswith(NOT_GROUPING)})
  for key in keys:
    values = sorted({json.dumps(flat.get(key)) for flat in flats})
    if len(values) > 1:
      return (f"runs cannot be compared: {key} differs ({', '.join(values)}); compare runs of "
              f"one dataset, model and prune.goal_sparsity")
  return None


def group_labels(runs: Sequence[tuple[str, dict]]) -> list[str]:
  """Each run's group label: its strategy plus the config keys that differ between runs of one
  strategy (a key that only follows the strategy is not shown), e.g. 'sms soup.m=4'."""
  flats = [flatten(results["config"]) for _, results in runs]
  keys = sorted({key for flat in flats for key in flat})

  def shown(flat, key):
    if key == "strategy" or key.startswith(NOT_GROUPING):
      return False
    same = [other for other in flats if other["strategy"] == flat["strategy"]]
    return len({json.dumps(other.get(key)) for other in same}) > 1

  return [" ".join([str(flat["strategy"])] +
                   [f"{key}={flat.get(key)}" for key in keys if shown(flat, key)])
          for flat in flats]


def points(results: dict[str, Any]) -> list[dict[str, Any]]:
  """The run's points: per phase then 'final', each {'phase', 'target', 'sparsity', metrics}."""
  def metrics(model, ood):
    ood_values = list((ood or {}).values())
    return {"test_accuracy": model.get("test_accuracy"), "test_ece": model.get("test_ece"),
            "ood_accuracy": float(np.mean(ood_values)) if ood_values else None}
  phases = results.get("phases") or []
  out = [{"phase": f"phase {record['phase']}", "target": record["target_sparsity"],
          "sparsity": record["sparsity"], **metrics(outcome(record), record.get("ood"))}
         for record in phases]
  final = results["final"]
  out.append({"phase": "final", "target": None,
              "sparsity": final.get("sparsity", phases[-1]["sparsity"] if phases else 0.0),
              **metrics(final, phases[-1].get("ood") if phases else None)})
  return out


def summary(values: Sequence[float]) -> dict[str, Any]:
  """{'n', 'mean', 'se'} (se None for n < 2) of the non-None values."""
  values = np.asarray([v for v in values if v is not None], float)
  n = len(values)
  return {"n": n, "mean": float(values.mean()) if n else None,
          "se": float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else None}


def paired(values: dict[int, float], base: dict[int, float], higher_better: bool):
  """The paired difference over the seeds both have: n, mean, se, 95% t interval, ahead, tied."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  seeds = sorted(s for s in values if s in base and values[s] is not None
                 and base[s] is not None)
  d = np.asarray([values[s] - base[s] for s in seeds], float)
  out = summary(d)
  out["seeds"] = seeds
  half = (stats.t.ppf(0.975, len(d) - 1) * out["se"]) if out["se"] is not None else None
  out["ci95"] = [out["mean"] - half, out["mean"] + half] if half is not None else None
  out["ahead"] = int(np.sum(d > 0 if higher_better else d < 0))
  out["tied"] = int(np.sum(d == 0))
  return out


def compare(runs: Sequence[tuple[str, dict]], baseline: str | None = None) -> dict[str, Any]:
  """The comparison of `runs` (comparable, see `refusal`): groups, per group and phase the
  summaries of METRICS and the sparsity, and paired differences against `baseline`."""
  labels = group_labels(runs)
  groups: dict[str, list] = {}
  for label, (path, results) in zip(labels, runs):
    groups.setdefault(label, []).append((path, results["config"]["seed"], points(results)))
  out = {"groups": {}, "baseline": None, "differences": {}}
  for label, members in sorted(groups.items()):
    counts = {len(p) for _, _, p in members}
    if len(counts) > 1:
      raise ValueError(f"group {label!r} mixes runs of {sorted(counts)} points (phases + final)")
    rows = []
    for i in range(counts.pop()):
      targets = {json.dumps(p[i]["target"]) for _, _, p in members}
      if len(targets) > 1:
        raise ValueError(f"group {label!r}: {members[0][2][i]['phase']} has target "
                         f"sparsities {sorted(targets)}")
      row = {"phase": members[0][2][i]["phase"], "target": members[0][2][i]["target"],
             "sparsity": summary([p[i]["sparsity"] for _, _, p in members]),
             "per_seed": {m: {seed: p[i][m] for _, seed, p in members} for m in METRICS}}
      row.update({m: summary([p[i][m] for _, _, p in members]) for m in METRICS})
      rows.append(row)
    out["groups"][label] = {"runs": [path for path, _, _ in members],
                            "seeds": [seed for _, seed, _ in members], "rows": rows}
  if baseline is not None:
    out["baseline"] = _baseline(out["groups"], baseline)
    base_rows = {row["phase"]: row for row in out["groups"][out["baseline"]]["rows"]}
    for label, group in out["groups"].items():
      if label == out["baseline"]:
        continue
      out["differences"][label] = [
          {"phase": row["phase"], **{m: paired(row["per_seed"][m],
                                               base_rows[row["phase"]]["per_seed"][m],
                                               HIGHER_IS_BETTER[m]) for m in METRICS}}
          for row in group["rows"] if row["phase"] in base_rows
          and base_rows[row["phase"]]["target"] == row["target"]]
  return out


def _baseline(groups: dict[str, Any], name: str) -> str:
  if name in groups:
    return name
  matches = [label for label in groups if label.split(" ")[0] == name]
  if len(matches) != 1:
    raise ValueError(f"--baseline={name} is not allowed; allowed: one of the groups "
                     f"{', '.join(repr(g) for g in groups)}")
  return matches[0]


def _fmt(s: dict[str, Any], scale: float = 100.0) -> str:
  if s["mean"] is None:
    return "n/a"
  se = "n/a" if s["se"] is None else f"{scale * s['se']:.2f}"
  return f"{scale * s['mean']:.2f} ± {se}"


def markdown(result: dict[str, Any], skipped: Sequence[str] = ()) -> str:
  """The comparison as markdown tables (accuracies and ECE in %)."""
  lines = ["| group | phase | sparsity % | n | test acc % | test ECE % | OOD acc % |",
           "|---|---|---|---|---|---|---|"]
  for label, group in result["groups"].items():
    for row in group["rows"]:
      lines.append(f"| {label} | {row['phase']} | {100 * row['sparsity']['mean']:.2f} | "
                   f"{row['test_accuracy']['n']} | " +
                   " | ".join(_fmt(row[m]) for m in METRICS) + " |")
  if result["baseline"] is not None:
    lines += ["", f"Paired differences against {result['baseline']} (by seed; points, "
              "mean ± s.e. [95% t interval], seeds ahead/tied of n):", "",
              "| group | phase | metric | difference | 95% interval | ahead | tied | n |",
              "|---|---|---|---|---|---|---|---|"]
    for label, rows in result["differences"].items():
      for row in rows:
        for m in METRICS:
          d = row[m]
          if not d["n"]:
            continue
          ci = ("n/a" if d["ci95"] is None
                else f"[{100 * d['ci95'][0]:.2f}, {100 * d['ci95'][1]:.2f}]")
          lines.append(f"| {label} | {row['phase']} | {m} | {_fmt(d)} | {ci} | {d['ahead']} | "
                       f"{d['tied']} | {d['n']} |")
  lines += [""] + [f"skipped (no results.json): {path}" for path in skipped]
  return "\n".join(lines).rstrip() + "\n"


def csv_text(result: dict[str, Any]) -> str:
  """One row per group x phase x metric: the summary and the paired difference to the baseline
  (empty cells where there is none, e.g. the s.e. of one run)."""
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(["group", "phase", "target_sparsity", "sparsity", "metric", "n", "mean", "se",
                   "diff_n", "diff_mean", "diff_se", "diff_ci95_low", "diff_ci95_high",
                   "diff_ahead", "diff_tied"])
  for label, group in result["groups"].items():
    diffs = {row["phase"]: row for row in result["differences"].get(label, [])}
    for row in group["rows"]:
      for m in METRICS:
        d = diffs.get(row["phase"], {}).get(m)
        extra = ([d["n"], d["mean"], d["se"], *(d["ci95"] or [None, None]), d["ahead"],
                  d["tied"]] if d else [None] * 7)
        writer.writerow([label, row["phase"], row["target"], row["sparsity"]["mean"], m,
                         row[m]["n"], row[m]["mean"], row[m]["se"], *extra])
  return buffer.getvalue()


def figure(result: dict[str, Any]):
  """Test accuracy (%) against sparsity (%) per group: mean line and ± s.e. band over phases
  (runs without phases: one point with its error bar)."""
  from sms_jax import plots  # pylint: disable=g-import-not-at-top
  fig, ax = plots._figure(6.4, 4.2)  # pylint: disable=protected-access
  for label, group in result["groups"].items():
    rows = [r for r in group["rows"] if r["phase"] != "final"] or group["rows"][-1:]
    x = np.asarray([100 * r["sparsity"]["mean"] for r in rows])
    y = np.asarray([100 * r["test_accuracy"]["mean"] for r in rows])
    se = np.asarray([100 * (r["test_accuracy"]["se"] or 0.0) for r in rows])
    if len(rows) > 1:
      (line,) = ax.plot(x, y, marker="o", label=f"{label} (n={rows[0]['test_accuracy']['n']})")
      ax.fill_between(x, y - se, y + se, color=line.get_color(), alpha=0.2)
    else:
      ax.errorbar(x, y, yerr=se, marker="s", capsize=3, linestyle="none",
                  label=f"{label} (n={rows[0]['test_accuracy']['n']})")
  ax.set_xlabel("sparsity (%)")
  ax.set_ylabel("test accuracy (%)")
  ax.set_title("test accuracy against sparsity (mean ± s.e. over seeds)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return fig


def write(result: dict[str, Any], out: str, skipped: Sequence[str] = ()) -> str:
  """Writes compare.md/.json/.csv/.png into `out`; returns the markdown."""
  from sms_jax import plots  # pylint: disable=g-import-not-at-top
  os.makedirs(out, exist_ok=True)
  text = markdown(result, skipped)
  with report.atomic_write(os.path.join(out, "compare.md")) as f:
    f.write(text)
  with report.atomic_write(os.path.join(out, "compare.json")) as f:
    json.dump({**result, "skipped": list(skipped)}, f, indent=1)
  with report.atomic_write(os.path.join(out, "compare.csv")) as f:
    f.write(csv_text(result))
  plots.save(figure(result), os.path.join(out, "compare.png"))
  return text


def _flag_values() -> flags.FlagValues:
  values = flags.FlagValues()
  flags.DEFINE_string("baseline", None, f"the baseline: {_ALLOWED['baseline']}",
                      flag_values=values)
  flags.DEFINE_string("out", None, f"where to write: {_ALLOWED['out']}", flag_values=values)
  return values


def main(argv: list[str] | None = None) -> int:
  """Runs the command on `argv` (paths and flags, no program name); returns the exit code:
  0, or 2 with one line on stderr for bad flags, no runs or runs that cannot be compared."""
  argv = sys.argv[1:] if argv is None else argv
  if cli.wants_help(argv):
    print(f"{__doc__}\nflags:\n{_flag_values().get_help()}")
    return 0
  paths = [a for a in argv if not a.startswith("-")]
  values, problem = cli.parse("compare", [a for a in argv if a.startswith("-")],
                              _flag_values(), _ALLOWED)
  runs, skipped = [], []
  if problem is None:
    missing = [p for p in paths if not os.path.isdir(p)]
    if not paths or missing:
      problem = (f"no such folder: {missing[0]}" if missing else
                 "give one or more run workdirs or folders of runs")
  if problem is None:
    runs, skipped = find_runs(paths)
    problem = (None if runs else f"no results.json under {', '.join(paths)}") or refusal(runs)
  result = None
  if problem is None:
    try:
      result = compare(runs, values.baseline)
    except ValueError as error:
      problem = str(error)
  if problem is not None:
    print(f"compare: {problem}", file=sys.stderr)
    return 2
  out = values.out or (paths[0] if len(paths) == 1 else os.getcwd())
  print(write(result, out, skipped), end="")
  return 0


if __name__ == "__main__":
  sys.exit(main())
