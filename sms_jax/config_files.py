"""Config files given on the command line: shipped configs by name, the `configs` import name,
one-line errors for a file that fails to load, and tuple overrides that the flag parser kept
as text read as values.

The config itself is validated by `sms_jax.config`; this module imports no JAX.
"""

import ast
import importlib
import importlib.util
import os
import sys
import traceback
from typing import Any

import ml_collections

from sms_jax import config as config_lib

# The configs shipped with the package (`sms_jax/configs`; `configs/` in a checkout links here).
SHIPPED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def shipped_configs() -> dict[str, str]:
  """{name: the first line of its docstring} of every shipped config, sorted by name (read
  from the files, not imported)."""
  out = {}
  for filename in sorted(os.listdir(SHIPPED_DIR)):
    if filename.endswith(".py") and not filename.startswith("_"):
      with open(os.path.join(SHIPPED_DIR, filename), encoding="utf-8") as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ""
      out[filename[:-3]] = doc.strip().split("\n")[0]
  return out


def resolve(spec: str) -> str:
  """The config file `spec` names: a shipped config's name (`mnist1d`, `mnist1d:quick`) as its
  path in the package (`.../sms_jax/configs/mnist1d.py:quick`); a file's path as it is."""
  path, colon, arg = spec.partition(":")
  if os.path.isfile(path) or path not in shipped_configs():
    return spec
  return os.path.join(SHIPPED_DIR, path + ".py") + colon + arg


def make_importable(path: str) -> None:
  """Lets the config file `path` do `from configs import default` wherever it is run from.

  For a file in a `configs` package of one's own (not the shipped one), the folder holding that
  package goes first on sys.path (its files import each other as `configs.x`). If then no
  `configs` package can be found (e.g. an installed sms_jax run outside the repository, whose
  root has the checkout's), `configs` names the shipped `sms_jax.configs`.
  """
  folder = os.path.dirname(os.path.abspath(path))
  if (os.path.basename(folder) == "configs" and os.path.isfile(os.path.join(folder, "__init__.py"))
      and not os.path.samefile(folder, SHIPPED_DIR)):
    sys.path.insert(0, os.path.dirname(folder))
  if "configs" not in sys.modules and importlib.util.find_spec("configs") is None:
    sys.modules["configs"] = importlib.import_module("sms_jax.configs")


def error_line(spec: str, error: BaseException) -> str:
  """One line for a config file that failed to load: `cannot load config file x.py:
  ZeroDivisionError: division by zero (line 3)`.

  Args:
    spec: the --config value, `file.py` or `file.py:arg`.
    error: what loading it raised (also as wrapped by absl or ml_collections).
  """
  path, colon, arg = spec.partition(":")
  if os.path.dirname(os.path.abspath(path)) == SHIPPED_DIR:  # As given: by its name.
    spec = os.path.basename(path)[:-len(".py")] + colon + arg
  if not os.path.isfile(path):
    return (f"cannot load config file {spec}: no such file; allowed: a config file's path or a "
            f"shipped config's name: {', '.join(shipped_configs())}")
  while (isinstance(error, OSError) and "an earlier failure to load" in str(error)
         or "Error whilst parsing config file" in str(error)) and (
             error.__cause__ or error.__context__):
    error = error.__cause__ or error.__context__  # What ml_collections or absl wrapped.
  if isinstance(error, AttributeError) and "attribute 'get_config'" in str(error):
    return f"cannot load config file {spec}: it defines no get_config()"
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  where = [frame.lineno for frame in traceback.extract_tb(error.__traceback__)
           if os.path.abspath(frame.filename) == os.path.abspath(path)]
  line = f" (line {where[-1]})" if where and not isinstance(error, SyntaxError) else ""
  return (f"cannot load config file {spec}: {type(error).__name__}: "
          f"{lines[-1] if lines else ''}{line}")


def check_loaded(config: Any) -> None:
  """Raises what a config file's `get_config()` raised (ml_collections defers some errors to
  the first access), TypeError unless it returned a ConfigDict, or what its values cannot be
  written as JSON (results.json) raises."""
  if not isinstance(config, ml_collections.ConfigDict):
    getattr(config, "lock", None)  # What failed to load raises its error on any access.
    raise TypeError(f"get_config() returned {'None' if config is None else type(config).__name__}"
                    "; allowed: a ml_collections.ConfigDict (start from configs/default.py)")
  config.to_json()


def parse_tuple_overrides(config: ml_collections.ConfigDict, overrides: dict[str, Any]) -> None:
  """Reads a tuple override that the flag parser kept as one string, e.g. '0.1,nan' (Python
  literals know no nan or inf) as comma-separated values: (0.1, nan), so that `validate`
  judges and shows each element."""
  schema = config_lib.flat_schema()
  for key, value in overrides.items():
    if (isinstance(schema.get(key), tuple) and isinstance(value, tuple) and len(value) == 1
        and isinstance(value[0], str)):
      *sections, name = key.split(".")
      block = config
      for section in sections:
        block = block[section]
      block[name] = tuple(_number_or_text(part.strip()) for part in value[0].split(","))


def _number_or_text(text: str) -> Any:
  for kind in (int, float):
    try:
      return kind(text)
    except ValueError:
      pass
  return text
