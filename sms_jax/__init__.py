"""sms_jax: Sparse Model Soups and random sparse starts in JAX/Flax."""

__version__ = "0.1.0"
