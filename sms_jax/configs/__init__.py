"""The experiment configs shipped with sms_jax: `--config=<name>[:arg]` runs `<name>.py`.

They live in the package (so an installed sms_jax has them); in a repository checkout,
`configs/` at the root links here, so `--config=configs/mnist1d.py` and `from configs import
default` work there too. Each file's `get_config(arg)` starts from `default.get_config()`.
"""
