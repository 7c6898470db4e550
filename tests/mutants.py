"""Plants, one at a time, the bugs in a phase that once passed the whole suite, and reports
which tests catch each (none left uncaught is the point). Not collected by pytest; run it from
the repository root, with the tests' environment:

  python tests/mutants.py                     # tests/test_phases.py and test_retrain.py
  python tests/mutants.py tests/test_phases.py tests/test_sms.py

Each bug is a one-line edit of the source, undone afterwards (also when interrupted).
It edits this checkout's source: runs started from the same checkout meanwhile import the
bug (run it in a clone, `git clone . /tmp/mutants`, when anything else is running).
"""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
BUGS = {  # name: (file, the correct text, the bug)
    "soup BatchNorm not recalibrated": (
        "sms_jax/phases/evaluate.py",
        'batches = None if self.bn_recalibration == "none" else self._batches()',
        "batches = None"),
    "varied learning rates ignored in training": (
        "sms_jax/phases/runner.py",
        "peak_learning_rate=self.pretrain.max_lr * scale * c.learning_rate,",
        "peak_learning_rate=self.pretrain.max_lr * scale,"),
    "greedy selection skipped": (
        "sms_jax/phases/evaluate.py", '    if method == "uniform":\n      return list(',
        '    if method in ("uniform", "greedy"):\n      return list('),
    "OOD sets left uncorrupted": (
        "sms_jax/data/corruptions.py",
        "generated = {name: np.concatenate([np.asarray(make(name, s)) for s in severities])",
        "generated = {name: np.concatenate([np.asarray(test.x) for s in severities])"),
    "ensemble replaced by the first candidate": (
        "sms_jax/phases/evaluate.py",
        '"ensemble": {"test_accuracy": evaluation.ensemble_accuracy(test_logits, test_labels)},',
        '"ensemble": {"test_accuracy": test_acc[0]},'),
    "candidates' seeds ignored": (
        "sms_jax/phases/runner.py", "jax.random.fold_in(phase_key, c.seed) for c in",
        "jax.random.fold_in(phase_key, 0) for c in"),
    # The SMS reference's details (issue 12).
    "linear retraining warmup instead of the reference's cosine": (
        "sms_jax/training/retrain.py",
        "warmup = pretrain.max_lr * 0.5 * (1.0 - jnp.cos(jnp.pi * count / jnp.maximum(warm, 1.0)))",
        "warmup = pretrain.max_lr * count / jnp.maximum(warm, 1.0)"),
    "warmup length rounded instead of truncated": (
        "sms_jax/training/retrain.py", "warm = jnp.floor(WARMUP_FRACTION * total)",
        "warm = jnp.round(WARMUP_FRACTION * total)"),
    "SLR replays the pretraining warmup instead of holding maxLR": (
        "sms_jax/training/retrain.py",
        "replayed = jnp.where(index < pretrain.warmup_steps, max_lr, pretrain.fn(index))",
        "replayed = pretrain.fn(index)"),
    "ALLR's lower bound from the config, not the candidate's length": (
        "sms_jax/phases/runner.py",
        "retrain.allr_peak(norm_drop, prune_rate, c.retrain_epochs,",
        "retrain.allr_peak(norm_drop, prune_rate, self.config.retrain.epochs_per_phase,"),
    "ALLR's norm drop over the kernels only": (
        "sms_jax/phases/runner.py",
        "          [jnp.sum(jnp.square(p)) for p in jax.tree.leaves(params)])",
        "          [jnp.sum(jnp.square(p)) for p in jax.tree.leaves(params) if p.ndim > 1])"),
    "candidates evaluated without recalibration": (
        "sms_jax/phases/evaluate.py",
        'if self.bn_recalibration != "all" or not jax.tree.leaves(stacked.batch_stats):',
        "if True:"),
    "best class reported as the worst": (
        "sms_jax/evaluation.py",
        "return float(min((predicted[labels == k] == k).mean() for k in np.unique(labels)))",
        "return float(max((predicted[labels == k] == k).mean() for k in np.unique(labels)))"),
    "distance to the start measured from zero": (
        "sms_jax/evaluation.py",
        "squared += np.square(w - np.asarray(start_leaf, np.float64).reshape(1, -1)).sum(1)",
        "squared += np.square(w).sum(1)"),
}


def main(tests: list[str]) -> int:
  uncaught = 0
  for name, (path, correct, bug) in BUGS.items():
    source = ROOT / path
    text = source.read_text()
    if text.count(correct) != 1:
      print(f"{name}: the text to change is not in {path} once; update this script")
      return 2
    source.write_text(text.replace(correct, bug))
    try:
      out = subprocess.run([sys.executable, "-m", "pytest", *tests, "-q", "-p", "no:cacheprovider"],
                           cwd=ROOT, capture_output=True, text=True, check=False)
    finally:
      source.write_text(text)
    failed = [line.split("::")[-1].split(" ")[0] for line in out.stdout.splitlines()
              if line.startswith("FAILED")]
    uncaught += not failed
    print(f"{name}: {', '.join(failed) if failed else 'NOT CAUGHT'}", flush=True)
  return 1 if uncaught else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:] or ["tests/test_phases.py", "tests/test_retrain.py"]))
