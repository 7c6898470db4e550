"""Strong lottery tickets on the embedded data: Edge-Popup (Ramanujan et al., 2020).

The 1-D CNN of configs/mnist1d.py never trains its weights: they stay at a signed-constant
init (each +-sqrt(2 / fan_in)). A score per prunable weight trains for 60 epochs (SGD at
learning rate 0.5, momentum 0.9, cosine schedule after 2 warmup epochs, weight decay 5e-4 on
the scores), and each layer computes with the weights of its top scores at the ERK layer
densities of global density 0.5 (the paper finds subnetworks of random weights best near half
the weights); ERK keeps the small first conv and the classifier whole (density 1), the middle
layers near 0.47. `--config.edge_popup.init=kaiming_normal` draws the weights from
N(0, 2 / fan_in) instead.

Arguments: `quick` (a smoke test of 3 epochs).
"""

from sms_jax.configs import default, mnist1d


def get_config(arg: str = ""):
  """Edge-Popup on MNIST-1D; `arg` '' or 'quick'."""
  default.check_config_arg(arg, "quick", arg in ("", "quick"))
  config = mnist1d.get_config()
  config.strategy = "edge_popup"
  config.edge_popup.init = "signed_constant"
  config.init_mask.distribution = "erk"
  config.init_mask.density = 0.5
  config.init_mask.method = "random"
  config.train.learning_rate = 0.5  # Of the scores; 0.2-1.0 within a point (3 seeds).
  if arg == "quick":
    config.train.epochs = 3
    config.train.warmup_epochs = 0.0
  return config
