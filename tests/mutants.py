"""Plants, one at a time, the bugs in a phase that once passed the whole suite, and reports
which tests catch each (none left uncaught is the point). Not collected by pytest; run it from
the repository root, with the tests' environment:

  python tests/mutants.py                     # tests/test_phases.py
  python tests/mutants.py tests/test_phases.py tests/test_sms.py

Each bug is a one-line edit of the source, undone afterwards (also when interrupted).
"""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
BUGS = {  # name: (file, the correct text, the bug)
    "soup BatchNorm not recalibrated": (
        "sms_jax/phases/evaluate.py", "    if len(indices) > 1:\n      batch_stats = soups.",
        "    if False:\n      batch_stats = soups."),
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
  sys.exit(main(sys.argv[1:] or ["tests/test_phases.py"]))
