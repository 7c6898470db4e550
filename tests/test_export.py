"""Export and load: a run's model as one file that reproduces the run's numbers anywhere."""

import json
import os
import shutil
import subprocess
import sys
import zipfile

import jax
import numpy as np
import pytest

from conftest import ROOT, make_tiny_config
from sms_jax import artifact, checkpoints, experiment, export
from sms_jax.data import sources


@pytest.fixture(scope="module")
def sms_run(tmp_path_factory):
  """A finished tiny SMS run: 2 phases of 2 candidates to sparsity 0.9."""
  config = make_tiny_config()
  config.strategy = "sms"
  config.prune.goal_sparsity = 0.9
  config.prune.n_phases = 2
  config.retrain.epochs_per_phase = 2
  config.soup.m = 2
  config.ood.severity = 0  # Not under test here: its programs would only cost compile time.
  workdir = str(tmp_path_factory.mktemp("sms_run"))
  return workdir, experiment.run(config, workdir)


@pytest.fixture(scope="module")
def raw_test():
  """MNIST-1D's test split as generated (the inputs a user of the model has)."""
  _, test, _ = sources.DATASETS["mnist1d"].load("")
  return test


def _accuracy(loaded, split) -> float:
  return float((loaded.predict(split.x).argmax(-1) == split.y).mean())


def test_loaded_in_a_fresh_process_reproduces_the_run_exactly(sms_run, raw_test, tmp_path):
  workdir, results = sms_run
  out = tmp_path / "model.sms"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  done = subprocess.run([sys.executable, "-m", "sms_jax.export", f"--workdir={workdir}",
                         f"--out={out}"], cwd=ROOT, env=env, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr
  assert done.stdout.startswith(f"wrote {out}: ") and "phase 2, sparsity 0.9000" in done.stdout
  np.savez(tmp_path / "raw.npz", x=raw_test.x, y=raw_test.y)
  # Nothing but the file: another directory, no workdir, config, dataset or TFDS.
  script = ("import sys, numpy as np, sms_jax\n"
            f"m = sms_jax.load({str(out)!r})\n"
            f"d = np.load({str(tmp_path / 'raw.npz')!r})\n"
            "p = m.predict(d['x'])\n"
            "assert np.allclose(p.sum(-1), 1, atol=1e-5)\n"
            "print(repr(float((p.argmax(-1) == d['y']).mean())))\n"
            "print(sorted(k for k in ('tensorflow', 'orbax', 'ml_collections', 'sms_jax.data')"
            " if k in sys.modules))\n")
  loaded = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
  assert loaded.returncode == 0, loaded.stderr
  accuracy, imported = loaded.stdout.split("\n")[:2]
  assert float(accuracy) == results["final"]["test_accuracy"]
  assert imported == "[]"


def test_every_phase_exports_the_checkpointed_model_bit_for_bit(sms_run, raw_test, tmp_path):
  workdir, results = sms_run
  for phase in (0, 1, 2):
    summary = export.export_run(workdir, str(tmp_path / f"p{phase}.sms"), phase=phase)
    loaded = artifact.load(summary["path"])
    if phase == 0:
      _, state, _ = checkpoints.read_verified(os.path.join(workdir, "checkpoints", "pretrain"))
      expected_accuracy = results["dense"]["test_accuracy"]
    else:
      _, state, _ = checkpoints.read_verified(os.path.join(workdir, "checkpoints", "phases"),
                                              phase)
      expected_accuracy = results["phases"][phase - 1]["soup"]["test_accuracy"]
      alive = jax.tree.leaves(state["masks"])
      assert jax.tree.all(jax.tree.map(np.array_equal, loaded.masks, state["masks"]))
      assert summary["sparsity"] == pytest.approx(
          1 - sum(m.sum() for m in alive) / sum(m.size for m in alive), abs=0)
    for key in ("params", "batch_stats"):
      assert jax.tree.all(jax.tree.map(np.array_equal, loaded.variables[key], state[key]))
    assert _accuracy(loaded, raw_test) == expected_accuracy
    assert loaded.manifest["metrics"]["test_accuracy"] == expected_accuracy
    assert loaded.manifest["source"]["phase"] == phase
  assert summary["sparsity"] == pytest.approx(results["final"]["sparsity"])


def test_pruned_kernels_are_stored_as_bits_and_alive_values(sms_run, tmp_path):
  workdir, _ = sms_run
  summary = export.export_run(workdir, str(tmp_path / "m.sms"))
  manifest, variables, masks = artifact.read(summary["path"])
  with zipfile.ZipFile(summary["path"]) as archive:
    names = set(archive.namelist())
    for name, entry in manifest["layout"].items():
      if "alive" in entry:
        values = np.load(archive.open(f"{name}.values.npy"))
        assert values.shape == (entry["alive"],) and f"{name}.npy" not in names
        assert np.load(archive.open(f"{name}.mask.npy")).size == -(-np.prod(entry["shape"]) // 8)
  kernel = variables["params"]["conv1"]["kernel"]
  assert np.count_nonzero(kernel[~masks["conv1"]["kernel"]]) == 0
  # At 90% sparsity about a tenth of the kernels' float32 bytes, plus one bit per weight.
  assert summary["bytes"] < 0.35 * summary["dense_float32_bytes"]


def test_sparse_start_without_phases_exports_the_masks_of_its_optimizer(tmp_path, raw_test):
  config = make_tiny_config()
  config.strategy = "dense"
  config.init_mask.distribution = "erk"
  config.init_mask.density = 0.2
  config.ood.severity = 0
  workdir = str(tmp_path / "run")
  results = experiment.run(config, workdir)
  summary = export.export_run(workdir)
  assert summary["path"] == os.path.join(workdir, "model.sms") and summary["phase"] is None
  assert summary["sparsity"] == pytest.approx(1 - results["init_mask"]["achieved_density"])
  loaded = artifact.load(summary["path"])
  assert _accuracy(loaded, raw_test) == results["final"]["test_accuracy"]
  with pytest.raises(export.ExportError, match="has no pruning phases"):
    export.export_run(workdir, phase=1)


def test_exports_that_cannot_be_made_are_refused_in_one_line(sms_run, tmp_path):
  workdir, _ = sms_run
  unfinished = str(tmp_path / "unfinished")  # Killed during phase 2... with phase 1 lost.
  shutil.copytree(workdir, unfinished)
  os.remove(os.path.join(unfinished, "results.json"))
  shutil.rmtree(os.path.join(unfinished, "checkpoints", "phases", "1"))
  not_started = tmp_path / "not_started"
  os.makedirs(not_started)
  shutil.copy(os.path.join(workdir, "config.json"), not_started)
  cases = [(dict(workdir=str(tmp_path / "missing")), "not a run's workdir"),
           (dict(workdir=workdir, phase=3), r"allowed: 0 \(the pretrained model\) to 2"),
           (dict(workdir=workdir, phase=-1), r"allowed: 0 \(the pretrained model\) to 2"),
           (dict(workdir=unfinished), r"not finished .*completed phase \(0, 2\)"),
           (dict(workdir=unfinished, phase=1), "phase 1's model is not in"),
           (dict(workdir=str(not_started)), "has no completed phase"),
           (dict(workdir=workdir, out=str(tmp_path / "no" / "dir" / "m.sms")), "cannot write")]
  for kwargs, message in cases:
    with pytest.raises(ValueError, match=message) as error:
      export.export_run(**kwargs)
    assert "\n" not in str(error.value)
  assert os.listdir(not_started) == ["config.json"]  # Nothing written.
  assert export.export_run(unfinished, phase=2)["phase"] == 2  # A completed phase exports.


def test_damaged_or_foreign_files_are_refused(sms_run, tmp_path):
  workdir, _ = sms_run
  path = export.export_run(workdir, str(tmp_path / "m.sms"))["path"]
  data = bytearray(open(path, "rb").read())
  with zipfile.ZipFile(path) as archive:
    info = archive.getinfo("params/conv1/kernel.values.npy")
  extra = int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
  data[info.header_offset + 30 + len(info.filename) + extra + info.compress_size // 2] ^= 0xFF
  damaged = tmp_path / "damaged.sms"
  damaged.write_bytes(bytes(data))
  with pytest.raises(artifact.ArtifactError, match="cannot read model file"):
    artifact.read(str(damaged))
  foreign = tmp_path / "foreign.zip"
  with zipfile.ZipFile(foreign, "w") as archive:
    archive.writestr("manifest.json", json.dumps({"format": "other"}))
  with pytest.raises(artifact.ArtifactError, match="not an sms_jax model file"):
    artifact.read(str(foreign))
  (tmp_path / "text.sms").write_text("hello")
  with pytest.raises(artifact.ArtifactError, match="cannot read model file"):
    artifact.read(str(tmp_path / "text.sms"))


def test_predict_refuses_inputs_of_another_shape(sms_run, tmp_path):
  workdir, _ = sms_run
  loaded = artifact.load(export.export_run(workdir, str(tmp_path / "m.sms"))["path"])
  with pytest.raises(ValueError, match=r"allowed: \[n, 40, 1\]"):
    loaded.predict(np.zeros((3, 40)))


def test_command_refuses_in_one_line(tmp_path, capsys):
  cases = [([f"--workdir={tmp_path}"], f"{tmp_path} is not a run's workdir (no config.json)"),
           ([], "--workdir is required"),
           ([f"--workdir={tmp_path}", "--phase=two"], "--phase=two is not allowed; allowed: 0"),
           ([f"--workdir={tmp_path}", "--epoch=3"], "unknown flag --epoch; allowed: --workdir")]
  for argv, message in cases:
    assert export.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err


def test_a_run_without_data_json_exports_the_same_standardisation(sms_run, tmp_path, capsys):
  """Runs from before data.json: the standardisation is recomputed from the dataset, as the
  run computed it (its `dataset.num_train` and validation hold-out included)."""
  workdir, _ = sms_run
  old = str(tmp_path / "old")
  shutil.copytree(workdir, old)
  os.remove(os.path.join(old, "data.json"))
  manifest = artifact.read(export.export_run(old, str(tmp_path / "old.sms"))["path"])[0]
  assert "recomputing the input standardisation" in capsys.readouterr().err
  with open(os.path.join(workdir, "data.json")) as f:
    assert manifest["standardization"] == json.load(f)["standardization"]
