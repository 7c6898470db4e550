"""bench/claims.py, the claims report: on fake results.json trees in the sweep's layout, its
paired differences and verdicts against a by-hand numpy computation, claims of missing families
as not measured, failed runs listed with their logs, the README block replaced only between its
markers, and its sweep commands accepted by sms_jax.sweep in the layout the analysis expects."""

import io
import json
import os
import sys
from contextlib import redirect_stdout

import numpy as np
import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "bench"))
import claims  # pylint: disable=g-import-not-at-top,wrong-import-position

SEEDS = claims.SEEDS
T975 = {3: 3.182446305, 9: 2.262157163}  # Student t quantiles (0.975; df), from tables.
DISTS = ("balanced", "pyramidal", "er", "uniform")


def _acc():
  """Per variant, per seed: final test accuracy (fractions), chosen so the claims' verdicts
  differ: sms > imp clearly, imp_mx > sms clearly, uniform << balanced."""
  rng = np.random.default_rng(0)
  base = 0.88 + 0.02 * rng.standard_normal(len(SEEDS))
  noise = lambda scale: scale * rng.standard_normal(len(SEEDS))
  acc = {"imp": base, "sms": base + 0.01 + noise(0.003), "imp_mx": base + 0.02 + noise(0.003),
         "gmp": base - 0.01 + noise(0.01), "sms_gmp": base - 0.01 + noise(0.01),
         "balanced": base + noise(0.004), "pyramidal": base + 0.003 + noise(0.004),
         "er": base - 0.015 + noise(0.002), "uniform": base - 0.04 + noise(0.005)}
  return {k: {s: float(round(v[i], 4)) for i, s in enumerate(SEEDS)} for k, v in acc.items()}


ACC = _acc()


def _config(strategy, seed, **extra):
  config = {"strategy": strategy, "seed": seed, "pretrained": f"/r/seed{seed}/pretrain",
            "dataset": {"name": "mnist1d", "data_dir": ""}, "model": {"name": "cnn1d"},
            "prune": {"goal_sparsity": 0.95}, "init_mask": {"distribution": "none"}}
  for key, value in extra.items():
    section, name = key.split(".")
    config[section][name] = value
  return config


def _results(strategy, seed, acc, **extra):
  """A results.json: one phase ('soup' with candidates for sms, 'model' for m = 1), OOD."""
  if strategy == "sms":
    cands = [acc - 0.004, acc - 0.001 * (seed % 3), acc + 0.002 * (seed % 2) - 0.003]
    record = {"soup": {"test_accuracy": acc},
              "candidates": [{"test_accuracy": c} for c in cands],
              "best_candidate": {"index": 1, "test_accuracy": cands[1]}}
  else:
    record = {"model": {"test_accuracy": acc}}
  ood = {"noise": acc - 0.3 + (0.002 * (seed % 4) if strategy == "sms" else 0.0),
         "blur": acc - 0.2}
  phase = {"phase": 1, "target_sparsity": 0.95, "sparsity": 0.95, "ood": ood, **record}
  return {"config": _config(strategy, seed, **extra), "phases": [phase],
          "final": {"test_accuracy": acc, "sparsity": 0.95}}


def _write(path, results):
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "results.json"), "w") as f:
    json.dump(results, f)


@pytest.fixture
def tree(tmp_path):
  """10 seeds: prune_retrain and random_start complete (plus shared pretraining runs), gmp
  without gmp_mx (failed: sweep.json and its log), no dpf or bimp."""
  root = str(tmp_path / "claims")
  for seed in SEEDS:
    base = os.path.join(root, "prune_retrain", f"seed{seed}")
    _write(os.path.join(base, "pretrain"), _results("dense", seed, 0.95))
    for strategy in ("imp", "imp_mx", "sms"):
      _write(os.path.join(base, strategy), _results(strategy, seed, ACC[strategy][seed]))
    for dist in DISTS:
      _write(os.path.join(root, claims.run_dir("random_start", seed, "imp", dist)),
             _results("imp", seed, ACC[dist][seed], **{"init_mask.distribution": dist,
                                                        "init_mask.density": 0.3}))
    for strategy in ("gmp", "sms_gmp"):
      results = _results(strategy, seed, ACC[strategy][seed])
      results.pop("phases")  # Runs without phases: the final point only.
      _write(os.path.join(root, "gmp", f"seed{seed}", strategy), results)
  os.makedirs(os.path.join(root, "gmp", "logs"))
  with open(os.path.join(root, "gmp", "logs", "seed1003_gmp_mx.log"), "w") as f:
    f.write("step 1\nValueError: boom\n")
  with open(os.path.join(root, "gmp", "sweep.json"), "w") as f:
    json.dump({"runs": [{"seed": 1003, "name": "gmp_mx", "status": "failed",
                         "exit_code": 1}]}, f)
  return root


def _by_hand(a, b, sign=1):
  """(mean, se, [lo, hi], ahead) in points of a - b over SEEDS, with numpy and a t table."""
  d = 100 * np.array([a[s] - b[s] for s in SEEDS])
  mean, se = d.mean(), np.sqrt(np.sum((d - d.mean()) ** 2) / (len(d) - 1) / len(d))
  half = T975[len(d) - 1] * se
  return mean, se, [mean - half, mean + half], int(np.sum(sign * d > 0))


@pytest.mark.parametrize("ci,rule,expected", [
    ([0.1, 2.0], "greater", "supported"), ([0.0, 2.0], "greater", "inconclusive"),
    ([-2.0, -0.1], "greater", "contradicted"), ([-0.5, 0.5], "greater", "inconclusive"),
    ([-2.0, -0.1], "less", "supported"), ([0.1, 2.0], "less", "contradicted"),
    ([-0.5, 0.0], "less", "inconclusive"),
    ([-0.05, 1.0], "at_least", "supported"), ([-0.2, 1.0], "at_least", "inconclusive"),
    ([-0.5, -0.15], "at_least", "contradicted"),
    ([-0.9, 0.5], "within_1", "supported"), ([-1.2, 0.5], "within_1", "inconclusive"),
    ([-3.0, -1.1], "within_1", "contradicted"), (None, "greater", "not measured")])
def test_verdict_rules(ci, rule, expected):
  assert claims.verdict(ci, rule) == expected


def test_claims_match_a_by_hand_computation(tree):
  result = claims.analyse(tree, list(claims.FAMILIES), SEEDS)
  got = {c["id"]: c for c in result["claims"]}
  sms_last = {s: _results("sms", s, ACC["sms"][s])["phases"][-1] for s in SEEDS}
  soup = {s: r["soup"]["test_accuracy"] for s, r in sms_last.items()}
  best = {s: r["best_candidate"]["test_accuracy"] for s, r in sms_last.items()}
  mean_cand = {s: np.mean([c["test_accuracy"] for c in r["candidates"]])
               for s, r in sms_last.items()}
  ood = lambda strategy: {s: np.mean(list(_results(strategy, s, ACC[strategy][s])["phases"][-1]
                                          ["ood"].values())) for s in SEEDS}
  expected = {"1": (ACC["sms"], ACC["imp"], 1), "2": (ACC["sms"], ACC["imp_mx"], 1),
              "3": (soup, best, 1), "4": (soup, mean_cand, 1), "5": (ood("sms"), ood("imp"), 1),
              "6b": (ACC["sms_gmp"], ACC["gmp"], 1),
              "9a": (ACC["balanced"], ACC["imp"], 1), "9c": (ACC["er"], ACC["imp"], 1),
              "10a": (ACC["uniform"], ACC["balanced"], -1),
              "10b": (ACC["uniform"], ACC["imp"], -1)}
  for cid, (a, b, sign) in expected.items():
    mean, se, ci, ahead = _by_hand(a, b, sign)
    c = got[cid]
    assert (c["n"], c["ahead"]) == (len(SEEDS), ahead), cid
    np.testing.assert_allclose([c["mean"], c["se"], *c["ci95"]], [mean, se, *ci], atol=1e-6,
                               err_msg=cid)
    rule = {"4": -0.1, "9a": -1.0, "9c": -1.0}.get(cid, 0.0)
    lo, hi = ci
    if sign < 0:
      want = "supported" if hi < 0 else "contradicted" if lo > 0 else "inconclusive"
    else:
      want = "supported" if lo > rule else "contradicted" if hi < rule else "inconclusive"
    assert c["verdict"] == want, cid
  # The fake data were chosen so that these verdicts are not all alike.
  assert [got[k]["verdict"] for k in ("1", "2", "10a", "9a")] == [
      "supported", "contradicted", "supported", "supported"]
  assert got["9c"]["verdict"] != "supported"  # er is 1.5 points below: not within 1 point.
  table = {r["variant"]: r for r in result["tables"]["prune_retrain"]}
  assert sorted(table) == ["imp", "imp_mx", "sms"]  # The shared pretraining is no variant.
  assert table["sms"]["mean"] == pytest.approx(np.mean(list(ACC["sms"].values())))
  assert result["start_differences"] == [
      "init_mask.density: 0.3 vs None", "init_mask.distribution: 'balanced' vs 'none'"]


def test_missing_family_and_failed_runs_are_reported(tree):
  result = claims.analyse(tree, list(claims.FAMILIES), SEEDS)
  got = {c["id"]: c for c in result["claims"]}
  for cid, missing in (("6a", "gmp/gmp_mx"), ("7", "dpf/sms_dpf"), ("8", "bimp/sms_bimp")):
    assert got[cid]["verdict"] == "not measured"
    assert missing in got[cid]["reason"]
  assert got["6b"]["verdict"] != "not measured"
  failed = {(f["family"], f["seed"], f["name"]): f for f in result["failed"]}
  assert len(failed) == len(SEEDS) * (1 + 2 + 2)  # gmp_mx, dpf x 2, bimp x 2 per seed.
  crashed = failed[("gmp", 1003, "gmp_mx")]
  assert (crashed["status"], crashed["exit_code"]) == ("failed", 1)
  assert crashed["log"].endswith("seed1003_gmp_mx.log") and "boom" in crashed["tail"]
  assert failed[("dpf", 1000, "dpf")]["status"] == "not run"
  subset = claims.analyse(tree, ["prune_retrain"], SEEDS)
  by_id = {c["id"]: c for c in subset["claims"]}
  assert by_id["9a"]["reason"] == "family random_start not run"
  assert by_id["1"]["verdict"] == "supported" and not subset["failed"]


def test_readme_block_is_replaced_only_between_the_markers(tmp_path):
  b, e = claims.BEGIN, claims.END
  text = f"# T\nbefore\n{b}\nold table\n{e}\nafter\n"
  assert claims.replace_block(text, "new\n") == f"# T\nbefore\n{b}\nnew\n{e}\nafter\n"
  for broken in (f"x\n{b}\nold\n", f"x\n{e}\n{b}\n", f"{b}{b}\n{e}\n", "no markers\n"):
    assert claims.replace_block(broken, "new") is None
  path = tmp_path / "README.md"
  path.write_text(f"x\n{e}\nold {b}\n")
  assert not claims.update_readme(str(path), "new")
  assert path.read_text() == f"x\n{e}\nold {b}\n"


def test_report_only_writes_the_report_and_the_readme_block(tree, tmp_path):
  readme = tmp_path / "README.md"
  readme.write_text(f"top\n{claims.BEGIN}\nstale\n{claims.END}\nbottom\n")
  out = str(tmp_path / "out")
  with redirect_stdout(io.StringIO()):
    assert claims.main([f"--root={tree}", "--report-only", f"--out={out}",
                        f"--readme={readme}"]) == 0
  with open(os.path.join(out, "claims.json")) as f:
    saved = json.load(f)
  assert saved["preregistered"] and saved["seeds"] == list(SEEDS)
  report = open(os.path.join(out, "CLAIMS.md")).read()
  assert "NOT the pre-registered" not in report and "Pre-registered protocol" in report
  one = next(c for c in saved["claims"] if c["id"] == "1")
  assert f"{one['mean']:+.2f} ± {one['se']:.2f}" in report
  assert "seed1003/gmp_mx`: failed, exit code 1" in report and "boom" in report
  text = readme.read_text()
  assert text.startswith(f"top\n{claims.BEGIN}\n") and text.endswith(f"{claims.END}\nbottom\n")
  assert "stale" not in text and "| 1 | SMS beats IMP" in text
  # Other seeds: said in the report; the README is left alone.
  readme.write_text("untouched")
  with redirect_stdout(io.StringIO()):
    claims.main([f"--root={tree}", "--report-only", f"--out={out}", f"--readme={readme}",
                 "--seeds=1000:1004"])
  assert "NOT the pre-registered" in open(os.path.join(out, "CLAIMS.md")).read()
  assert readme.read_text() == "untouched"
  with open(os.path.join(out, "claims.json")) as f:  # Only the seeds asked for are analysed.
    assert next(c for c in json.load(f)["claims"] if c["id"] == "1")["n"] == 4


def test_sweep_accepts_the_commands_in_the_layout_the_analysis_reads(tmp_path, capsys):
  from sms_jax import sweep  # pylint: disable=g-import-not-at-top
  root = str(tmp_path)
  cmd = claims.sweep_command("random_start", [1000], root)
  assert cmd[:3] == ["python", "-m", "sms_jax.sweep"] and "--jobs=2" in cmd
  assert sweep.main(cmd[3:-1] + ["--print=runs"]) == 0
  workdirs = [arg.split("=", 1)[1] for line in capsys.readouterr().out.splitlines()
              for arg in line.split() if arg.startswith("--workdir=")]
  assert workdirs == [os.path.join(root, claims.run_dir("random_start", 1000, "imp", d))
                      for d in DISTS]
  assert "--seeds=1000:1010" in claims.sweep_command("gmp", SEEDS, root)
