"""docs/API.md: generated from the public names' docstrings, deterministic, checked fresh."""

import types

from sms_jax import soups, sparsity
from sms_jax.tools import api_docs


def test_the_committed_api_reference_is_current():
  assert api_docs.main(["--check"]) == 0, "run: python -m sms_jax.tools.api_docs"


def test_check_flags_a_stale_file_in_one_line(tmp_path, capsys):
  out = str(tmp_path / "API.md")
  assert api_docs.main(["--check", "--output", out]) == 1  # Missing.
  assert api_docs.main(["--output", out]) == 0
  assert api_docs.main(["--check", "--output", out]) == 0
  with open(out, "a", encoding="utf-8") as f:
    f.write("edited by hand\n")
  capsys.readouterr()
  assert api_docs.main(["--check", "--output", out]) == 1
  assert capsys.readouterr().err.count("\n") == 1


def test_public_names_are_all_else_the_module_own_names():
  module = types.ModuleType("fake")
  exec("from os.path import join\nimport math\nLIMIT = 3\n"  # pylint: disable=exec-used
       "def visible():\n  'Doc.'\ndef _hidden():\n  pass\n", vars(module))
  assert api_docs.public_names(module) == ["LIMIT", "visible"]
  module.__all__ = ["join"]
  assert api_docs.public_names(module) == ["join"]
  assert api_docs.public_names(sparsity) == sparsity.__all__
  assert "stack_candidates" in api_docs.public_names(soups)
  assert "engine" not in api_docs.public_names(soups)


def test_rendering_is_deterministic():
  text = api_docs.render([soups])
  assert text == api_docs.render([soups]) and " at 0x" not in text
  assert "### greedy_soup_variables" in text and "batches: Iterable[jax.Array]" in text
