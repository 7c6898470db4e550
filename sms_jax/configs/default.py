"""The default config every experiment config starts from.

The keys and their defaults live in `sms_jax/defaults.py`, inside the package, because they
are also the schema that `sms_jax.config.validate` checks every config against.
"""

from sms_jax.defaults import check_config_arg, get_config  # pylint: disable=unused-import
