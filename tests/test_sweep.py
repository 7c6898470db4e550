"""sms_jax.sweep: the planned grid and its workdirs, shared pretraining only for the strategies
that share it, `--print`'s stages, refusals before anything is created, and one tiny sweep run
locally (shared pretraining per seed, skipping on a rerun, a failed run and the runs it blocks)."""

import itertools
import json
import os
import shlex

import pytest

from conftest import ROOT
from sms_jax import strategies, sweep

TINY = '''from configs import mnist1d


def get_config(arg=""):
  config = mnist1d.get_config("quick")
  config.dataset.num_train = 512
  config.train.epochs = 1
  config.train.batch_size = 64
  config.train.eval_batch_size = 256
  config.prune.n_phases = 1
  config.retrain.epochs_per_phase = 1
  config.soup.m = 2
  config.checkpoint.every_epochs = 1
  config.checkpoint.min_interval_s = 0.0
  config.gradual.start_epoch = 0
  config.gradual.end_epoch = 1
  config.ood.severity = 0
  return config
'''


@pytest.fixture(name="tiny_file")
def fixture_tiny_file(tmp_path):
  path = tmp_path / "tiny.py"
  path.write_text(TINY)
  return str(path)


def _argv(tiny_file, root, *more):
  return [f"--config={tiny_file}", f"--root={root}", *more]


def test_grid_expands_to_one_run_per_point_and_shares_pretraining_per_seed(tiny_file, tmp_path):
  root = str(tmp_path / "sw")
  runs = sweep.plan(tiny_file, [0, 3], ["sms", "imp", "gmp"],
                    ["soup.m=2,3", "retrain.epochs_per_phase=1,2"], root)
  pretrain = [run for run in runs if run.is_pretrain]
  others = [run for run in runs if not run.is_pretrain]
  assert runs[:len(pretrain)] == pretrain  # Pretraining first.
  assert [run.workdir for run in pretrain] == [f"{root}/seed0/pretrain", f"{root}/seed3/pretrain"]
  # Independently: every (seed, strategy, m, epochs) combination once, named by its values.
  expected = {f"{root}/seed{seed}/{name},soup.m={m},retrain.epochs_per_phase={e}"
              for seed, name, m, e in itertools.product((0, 3), ("sms", "imp", "gmp"), (2, 3),
                                                        (1, 2))}
  assert {run.workdir for run in others} == expected and len(others) == len(expected)
  for run in others:
    config = run.config
    assert run.workdir.endswith(f"soup.m={config['soup']['m']},retrain.epochs_per_phase="
                                f"{config['retrain']['epochs_per_phase']}")
    assert run.workdir.startswith(f"{root}/seed{config['seed']}/{config['strategy']},")
    shares = strategies.STRATEGIES[config["strategy"]].shares_pretraining
    assert shares == (config["strategy"] != "gmp")
    assert config["pretrained"] == (f"{root}/seed{config['seed']}/pretrain" if shares else "")
    assert run.after == (config["pretrained"] or None)
  for run in pretrain:
    assert run.config["strategy"] == "dense" and run.config["pretrained"] == ""
    assert run.config["seed"] == int(run.workdir.split("seed")[-1].split("/")[0])
  assert not os.path.exists(root)


def test_a_grid_over_a_pretraining_key_makes_one_pretraining_per_value(tiny_file, tmp_path):
  root = str(tmp_path / "sw")
  runs = sweep.plan(tiny_file, [1], ["sms", "imp"], ["train.epochs=1,2", "soup.m=2,3"], root)
  pretrain = {run.workdir: run for run in runs if run.is_pretrain}
  assert sorted(pretrain) == [f"{root}/seed1/pretrain,train.epochs=1",
                              f"{root}/seed1/pretrain,train.epochs=2"]
  for run in pretrain.values():  # Only the pretraining key goes into a pretraining run.
    assert run.config["train"]["epochs"] == int(run.workdir[-1]) and run.config["soup"]["m"] == 2
  for run in runs:
    if not run.is_pretrain:
      source = pretrain[run.config["pretrained"]].config
      assert source["train"] == run.config["train"]  # The same pretraining it starts from.


def test_no_pretraining_run_when_no_strategy_shares_it(tiny_file, tmp_path):
  runs = sweep.plan(tiny_file, [0, 1], ["gmp"], [], str(tmp_path / "sw"))
  assert [run.name for run in runs] == ["gmp", "gmp"]
  assert all(run.after is None and run.config["pretrained"] == "" for run in runs)


def test_values_take_the_config_keys_types(tiny_file, tmp_path):
  runs = sweep.plan(tiny_file, [0], ["sms"],
                    ["train.learning_rate=0.1,1e-2", "soup.method=uniform,greedy"],
                    str(tmp_path / "sw"))
  got = {(run.config["train"]["learning_rate"], run.config["soup"]["method"])
         for run in runs if not run.is_pretrain}
  assert got == {(0.1, "uniform"), (0.1, "greedy"), (0.01, "uniform"), (0.01, "greedy")}
  assert sweep.parse_seeds("2:5") == [2, 3, 4] and sweep.parse_seeds("0,3,7") == [0, 3, 7]


def test_print_writes_pretraining_first_and_each_stage_alone(tiny_file, tmp_path, capsys):
  root = str(tmp_path / "sw")
  argv = _argv(tiny_file, root, "--seeds=0:2", "--strategies=imp,sms,gmp", "--set",
               "soup.m=2,3")
  stages = {}
  for how in ("--print", "--print=pretrain", "--print=runs"):
    assert sweep.main([*argv, how]) == 0
    stages[how] = [shlex.split(line) for line in capsys.readouterr().out.splitlines()]
  every = stages["--print"]
  assert every == stages["--print=pretrain"] + stages["--print=runs"]
  assert len(stages["--print=pretrain"]) == 2 and len(stages["--print=runs"]) == 2 * 3 * 2
  workdirs = []
  for args in every:
    assert args[1:4] == ["-m", "sms_jax.main", f"--config={tiny_file}"]
    options = dict(arg.split("=", 1) for arg in args[3:])
    workdirs.append(options["--workdir"])
    pretrained = options.get("--config.pretrained")
    if pretrained:  # Its source is printed in the stage before.
      assert [pretrained] == [w for w in workdirs if w == pretrained]
      assert every.index(args) >= len(stages["--print=pretrain"])
    assert (pretrained is None) == (options["--config.strategy"] in ("gmp", "dense"))
  assert len(set(workdirs)) == len(workdirs)
  assert not os.path.exists(root)


@pytest.mark.parametrize("more, expected", [
    (["--strategies=sms,nope"], "--strategies: unknown strategy 'nope'; allowed: imp"),
    (["--strategies=sms", "--set", "soup.m=2,x"], "soup.m = x has the wrong type"),
    (["--strategies=sms", "--set", "soup.m=2,0"], "soup.m = 0 is not allowed; allowed: an int"),
    (["--strategies=sms", "--set", "soup.mm=2"], "unknown config key 'soup.mm'"),
    (["--strategies=sms", "--set", "seed=1,2"], "--set seed is not allowed"),
    (["--strategies=sms", "--set", "soup.m=2,2"], "--set soup.m=2,2 is not allowed; allowed: k"),
    (["--strategies=sms", "--seeds=4:4"], "--seeds=4:4 is not allowed; allowed: a:b"),
    (["--strategies=gmp", "--set", "gradual.end_epoch=1,5"],
     "run seed0/gmp,gradual.end_epoch=5: config keys gradual.start_epoch = 0, gradual.end_epo"),
    (["--strategies=sms", "--jobs=0"], "--jobs=0 is not allowed"),
])
def test_bad_input_is_one_line_and_creates_nothing(tiny_file, tmp_path, capsys, more, expected):
  root = tmp_path / "sw"
  assert sweep.main(_argv(tiny_file, root, *more)) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and expected in err and err.count("\n") == 1, err
  assert not root.exists()


def test_a_root_holding_runs_of_another_config_is_refused(tiny_file, tmp_path, capsys):
  root = tmp_path / "sw"
  (root / "seed0" / "imp").mkdir(parents=True)
  (root / "seed0" / "imp" / "config.json").write_text(json.dumps({"strategy": "imp"}))
  assert sweep.main(_argv(tiny_file, root, "--strategies=imp")) == 2
  assert "holds a run with another config" in capsys.readouterr().err
  assert sorted(os.listdir(root)) == ["seed0"]


def test_a_run_counts_as_finished_only_with_results_and_the_same_config(tiny_file, tmp_path):
  [run] = sweep.plan(tiny_file, [0], ["gmp"], [], str(tmp_path / "sw"))
  os.makedirs(run.workdir)
  write = lambda name, obj: open(os.path.join(run.workdir, name), "w").write(json.dumps(obj))
  write("config.json", run.config)
  assert not sweep.finished(run)  # No results.json: unfinished, it resumes.
  write("results.json", {})
  assert sweep.finished(run)
  write("config.json", {**run.config, "checkpoint": {"every_epochs": 7, "keep": 1}})
  assert sweep.finished(run)  # The checkpoint policy may differ.
  write("config.json", {**run.config, "train": {**run.config["train"], "epochs": 2}})
  assert not sweep.finished(run)


def test_tiny_sweep_runs_shares_pretraining_skips_when_rerun_and_reports_a_failure(
    tiny_file, tmp_path, capsys, monkeypatch):
  monkeypatch.chdir(ROOT)
  root = tmp_path / "sw"
  argv = _argv(tiny_file, root, "--seeds=0:1", "--strategies=imp,sms", "--jobs=2")
  assert sweep.main(argv) == 0
  out = capsys.readouterr().out
  record = json.loads((root / "sweep.json").read_text())
  assert [row["status"] for row in record["runs"]] == ["done"] * 3, out
  assert record["flags"]["seeds"] == "0:1" and record["flags"]["strategies"] == ["imp", "sms"]
  for seed in (0,):
    assert (root / f"seed{seed}" / "pretrain" / "checkpoints" / "pretrain").is_dir()
    for name in ("imp", "sms"):
      workdir = root / f"seed{seed}" / name
      results = json.loads((workdir / "results.json").read_text())
      assert results["config"]["pretrained"] == str(root / f"seed{seed}" / "pretrain")
      assert not (workdir / "checkpoints" / "pretrain").exists()  # Not pretrained again.
  assert out.count("] done ") == 3 and out.rstrip().endswith(f"{root / 'sweep.json'}")
  lines = [line.split("] ", 1)[1].split(" in ")[0] for line in out.splitlines() if "] " in line]
  for seed, name in itertools.product((0,), ("imp", "sms")):  # After its pretraining.
    assert lines.index(f"done seed{seed}/pretrain") < lines.index(f"started seed{seed}/{name}")

  assert sweep.main(argv) == 0  # Everything finished: skipped, nothing started.
  out = capsys.readouterr().out
  assert out.count("] skipped ") == 3 and "started" not in out

  # A second seed whose pretraining fails (a stand-in command, fast): it is reported with its
  # log and last line; the runs that start from it are blocked; the exit code is 1.
  real_command = sweep.command

  def command(spec, run, python="python"):
    if run.is_pretrain and run.seed == 1:
      return [python, "-c", "import sys; print('boom', flush=True); sys.exit(3)"]
    return real_command(spec, run, python)
  monkeypatch.setattr(sweep, "command", command)
  assert sweep.main([*argv[:2], "--seeds=0:2", *argv[3:]]) == 1
  out = capsys.readouterr().out
  log = root / "logs" / "seed1_pretrain.log"
  assert "failed seed1/pretrain in " in out, out
  assert f" s (exit 3; log: {log}; last line: boom)" in out, out
  assert out.count("] blocked seed1/") == 2 and out.count("] skipped ") == 3
  assert "started seed1/imp" not in out and not (root / "seed1" / "imp").exists()
  rows = json.loads((root / "sweep.json").read_text())["runs"]
  statuses = {f"seed{row['seed']}/{row['name']}": (row["status"], row["exit_code"])
              for row in rows}
  assert statuses == {**{f"seed{s}/{n}": ("skipped", None) for s in (0,)
                         for n in ("pretrain", "imp", "sms")},
                      "seed1/pretrain": ("failed", 3), "seed1/imp": ("blocked", None),
                      "seed1/sms": ("blocked", None)}
