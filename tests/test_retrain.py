"""Retraining schedules (REFERENCE.md section 1) and the retraining optimizer."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from sms_jax.training import optimizers, retrain


def _pretrain(schedule="cosine", warmup=0.0):
  train = default.get_config().train
  train.epochs, train.learning_rate, train.schedule, train.warmup_epochs = 10, 0.2, schedule, warmup
  return retrain.pretrain_schedule(train, 10)  # 100 iterations.


def _lr(kind, count, total=50, peak=0.2, pretrain=None):
  pretrain = pretrain or _pretrain()
  return float(retrain.learning_rate(kind, jnp.asarray(count), jnp.asarray(total),
                                     jnp.asarray(peak), pretrain))


def test_pretrain_schedule_max_and_min():
  pre = _pretrain("multistep", warmup=1.0)
  assert pre.max_lr == 0.2 and pre.steps == 100 and pre.warmup_steps == 10
  assert pre.min_lr == pytest.approx(0.2 * 0.01)  # Two 10x decays; warmup's 0 not counted.


def test_llr_warms_up_then_decays_linearly_to_zero():
  # 50 iterations: 5 of warmup from 0 to maxLR, then linear to 0.
  assert _lr("llr", 0) == 0.0
  assert _lr("llr", 2) == pytest.approx(0.2 * 2 / 5)
  assert _lr("llr", 5) == pytest.approx(0.2)
  assert _lr("llr", 5 + 45 / 2) == pytest.approx(0.1)
  assert _lr("llr", 50) == pytest.approx(0.0)
  assert _lr("llr", 5, peak=0.1) == pytest.approx(0.1)  # A candidate's own peak.


def test_ft_clr_lrw_slr():
  pre = _pretrain("cosine")
  assert _lr("ft", 17, pretrain=pre) == pytest.approx(pre.min_lr)
  assert _lr("clr", 5, pretrain=pre) == pytest.approx(0.2)
  assert _lr("clr", 50, pretrain=pre) == pytest.approx(pre.min_lr)
  assert _lr("clr", 5 + 45 / 2, pretrain=pre) == pytest.approx((0.2 + pre.min_lr) / 2)
  # LRW replays the last 50 of the 100 pretraining iterations.
  for count in (0, 13, 49):
    assert _lr("lrw", count, pretrain=pre) == pytest.approx(float(pre.fn(50 + count)), rel=1e-5)
  # SLR: warmup, then the whole pretraining schedule compressed into 45 iterations.
  assert _lr("slr", 5, pretrain=pre) == pytest.approx(0.2)
  assert _lr("slr", 50, pretrain=pre) == pytest.approx(float(pre.fn(99)), abs=1e-6)
  assert _lr("slr", 5 + 45 / 2, pretrain=pre) == pytest.approx(float(pre.fn(49.5)), rel=1e-5)


def test_allr_peak_is_clipped():
  assert retrain.allr_peak(0.1, 0.25, 10, 100, 0.2) == pytest.approx(0.2 * 0.1 / 0.5)
  assert retrain.allr_peak(0.001, 0.25, 10, 100, 0.2) == pytest.approx(0.2 * 10 / 100)
  assert retrain.allr_peak(0.9, 0.25, 10, 100, 0.2) == pytest.approx(0.2)


def test_retrain_optimizer_is_sgd_with_coupled_decay_and_momentum():
  params = {"w": {"kernel": jnp.asarray([[1.0, -2.0], [0.5, 3.0]])}}
  train = default.get_config().train
  train.momentum, train.nesterov = 0.9, False
  tx = retrain.retrain_optimizer(train, "llr", _pretrain(), peak_learning_rate=0.2,
                                 total_steps=50, weight_decay=0.1)
  state = tx.init(params)
  w, buf = np.asarray(params["w"]["kernel"]), np.zeros((2, 2))
  p = params
  for count in range(4):
    g = np.full((2, 2), 0.3 * (count + 1), np.float32)
    updates, state = tx.update({"w": {"kernel": jnp.asarray(g)}}, state, p)
    p = optax.apply_updates(p, updates)
    buf = 0.9 * buf + g + 0.1 * w  # PyTorch's SGD: d = g + wd * w; buf = mu * buf + d.
    w = w - _lr("llr", count) * buf
    np.testing.assert_allclose(np.asarray(p["w"]["kernel"]), w, rtol=1e-6)
  assert float(optimizers.learning_rate_of(state)) == pytest.approx(_lr("llr", 3))


def test_unknown_schedule_is_rejected():
  with pytest.raises(ValueError, match="unknown retrain.schedule 'x'; allowed: ft, lrw"):
    _lr("x", 0)
