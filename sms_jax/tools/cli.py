"""Flags of the commands: `sms_jax.export` and `sms_jax.tools.densities` parse absl flags as
`sms_jax.main` takes them into fresh `FlagValues` on each call (so that a command's
`main(argv)` can be called in process), every problem one line; all three ask `wants_help`."""

import re

from absl import flags


def parse(program: str, argv: list[str], values: flags.FlagValues, allowed: dict[str, str],
          required: tuple[str, ...] = ()) -> tuple[flags.FlagValues | None, str | None]:
  """Parses `argv` (without the program name) into `values`.

  Args:
    program: the command's name, for absl.
    argv: the arguments.
    values: the command's flags, defined on a fresh `flags.FlagValues()`.
    allowed: per flag name, what it allows (for the messages).
    required: flags that must be given.
  Returns:
    `(values, None)`, or `(None, the problem in one line)`.
  """
  try:
    rest = values([program, *argv])
  except flags.UnrecognizedFlagError as error:
    return None, (f"unknown flag --{error.flagname}; allowed: "
                  f"{', '.join('--' + name for name in allowed)}")
  except flags.Error as error:
    match = re.match(r"flag --(\w+)=(.*?): ", str(error))
    if match and match.group(1) in allowed:
      return None, (f"--{match.group(1)}={match.group(2)} is not allowed; allowed: "
                    f"{allowed[match.group(1)]}")
    return None, str(error).splitlines()[0]
  if len(rest) > 1:
    return None, (f"unexpected arguments {' '.join(rest[1:])!r}; use "
                  f"{', '.join('--' + name for name in allowed)}")
  for name in required:
    if values[name].value is None:
      return None, f"--{name} is required; allowed: {allowed[name]}"
  return values, None


HELP_FLAGS = ("-h", "-?", "-help", "--help", "--helpshort", "--helpfull")


def wants_help(argv: list[str]) -> bool:
  """Whether `argv` asks for help (then the command prints it and exits 0)."""
  return any(arg in HELP_FLAGS for arg in argv)
