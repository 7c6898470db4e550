"""Experiment strategies: each turns a validated config and a dataset into results."""

from sms_jax.strategies import dense

STRATEGIES = {"dense": dense.run}
