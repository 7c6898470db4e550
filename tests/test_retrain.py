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


def _cosine_warmup(count, warm, peak=0.2):
  """The reference's warmup (REFERENCE.md section 6), written out independently."""
  return peak * (1 - np.cos(np.pi * count / warm)) / 2


def test_llr_warms_up_with_a_cosine_then_decays_linearly_to_zero():
  # 50 iterations: int(0.1 * 50) = 5 of cosine warmup from 0 to maxLR, then linear to 0.
  assert _lr("llr", 0) == 0.0
  for count in (1, 2, 4):
    assert _lr("llr", count) == pytest.approx(_cosine_warmup(count, 5), rel=1e-5)
  assert _lr("llr", 2) != pytest.approx(0.2 * 2 / 5)  # Not the linear ramp.
  assert _lr("llr", 5) == pytest.approx(0.2)
  assert _lr("llr", 5 + 45 / 2) == pytest.approx(0.1)
  assert _lr("llr", 50) == pytest.approx(0.0)
  assert _lr("llr", 5, peak=0.1) == pytest.approx(0.1)  # A candidate's own peak.
  assert _lr("allr", 3, peak=0.1) == pytest.approx(_cosine_warmup(3, 5, peak=0.1), rel=1e-5)


def test_warmup_length_is_truncated_not_rounded():
  # 59 iterations: int(5.9) = 5 warmup iterations (rounding would give 6).
  assert _lr("llr", 5, total=59) == pytest.approx(0.2)
  assert _lr("clr", 3, total=59) == pytest.approx(_cosine_warmup(3, 5), rel=1e-5)
  # 9 iterations: int(0.9) = 0, no warmup: the decay starts at the peak.
  assert _lr("llr", 0, total=9) == pytest.approx(0.2)
  assert _lr("llr", 3, total=9) == pytest.approx(0.2 * (1 - 3 / 9))


def test_ft_clr_lrw():
  pre = _pretrain("cosine")
  assert _lr("ft", 17, pretrain=pre) == pytest.approx(pre.min_lr)
  assert _lr("ft", 0, pretrain=pre) == pytest.approx(pre.min_lr)  # No warmup.
  assert _lr("clr", 2, pretrain=pre) == pytest.approx(_cosine_warmup(2, 5), rel=1e-5)
  assert _lr("clr", 5, pretrain=pre) == pytest.approx(0.2)
  assert _lr("clr", 50, pretrain=pre) == pytest.approx(pre.min_lr)
  assert _lr("clr", 5 + 45 / 2, pretrain=pre) == pytest.approx((0.2 + pre.min_lr) / 2)
  # LRW replays the last 50 of the 100 pretraining iterations, without warmup.
  for count in (0, 13, 49):
    assert _lr("lrw", count, pretrain=pre) == pytest.approx(float(pre.fn(50 + count)), rel=1e-5)


def test_slr_compresses_the_whole_pretraining_schedule_with_its_warmup_held_at_max():
  # Pretraining: 100 iterations, 10 of them linear warmup, then cosine. Retraining 50: a
  # cosine warmup of 5, then iteration 5 + j replays pretraining iteration int(j * 100 / 45),
  # whose warmup part (iterations 0..9) is replaced by maxLR, as in the reference.
  pre = _pretrain("cosine", warmup=1.0)
  assert pre.warmup_steps == 10
  assert _lr("slr", 2, pretrain=pre) == pytest.approx(_cosine_warmup(2, 5), rel=1e-5)
  for j in range(45):
    index = int(j * 100 / 45)
    want = 0.2 if index < 10 else float(pre.fn(index))
    assert _lr("slr", 5 + j, pretrain=pre) == pytest.approx(want, rel=1e-5, abs=1e-7), j
  assert _lr("slr", 5 + 2, pretrain=pre) == pytest.approx(0.2)  # Pretraining's warmup: maxLR.
  assert float(pre.fn(4)) < 0.1  # ... where the pretraining schedule itself was low.


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
