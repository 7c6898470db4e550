"""Command-line tools: `python -m sms_jax.tools.<name> --help`."""
