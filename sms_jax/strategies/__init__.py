"""Experiment strategies: each turns a validated config and a dataset into results."""

from sms_jax.strategies import dense, gradual, sms

STRATEGIES = {"dense": dense.run, "imp": sms.run_imp, "imp_mx": sms.run_imp_mx,
              "sms": sms.run_sms, "gmp": gradual.run_gmp, "sms_gmp": gradual.run_sms_gmp}


def candidates_per_phase(config) -> int:
  """m, the candidates trained together in each phase (1 for strategies without soups)."""
  return config.soup.m if config.strategy in ("sms", "sms_gmp") else 1
