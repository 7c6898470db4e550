"""sms_jax: Sparse Model Soups and random sparse starts in JAX/Flax."""

__version__ = "0.1.0"


def __getattr__(name: str):
  """`sms_jax.load(path)`: loads an exported model (`sms_jax.artifact.load`), imported on
  first use so that `import sms_jax.config` stays free of JAX."""
  if name == "load":
    from sms_jax.artifact import load  # pylint: disable=g-import-not-at-top
    return load
  raise AttributeError(f"module 'sms_jax' has no attribute {name!r}")
