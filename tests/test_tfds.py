"""TFDS sources, tested offline on tiny datasets written with TFDS's own writer.

Each fake dataset takes the name, version and feature spec of the real TFDS builder
(cifar10, mnist, imagenet2012), so the real builders read it as a prepared dataset.
"""

import pathlib
import socket
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from configs import default
import sms_jax.data
from sms_jax import experiment
from sms_jax.data import corruptions, tfds_source


N_TRAIN, N_TEST = 40, 12
IMAGE_SIZE = 32  # stream_batches' output side in these tests


@pytest.fixture(scope="module", autouse=True)
def offline():
  """No network: TFDS's GCS access stays off and Internet sockets refuse to connect."""
  from tensorflow_datasets.core.utils import gcs_utils  # pylint: disable=g-import-not-at-top
  connect = socket.socket.connect

  def refuse(sock, address):
    if sock.family in (socket.AF_INET, socket.AF_INET6):
      raise OSError(f"a test tried to reach the network: {address}")
    return connect(sock, address)

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(gcs_utils, "_is_gcs_disabled", True)
    mp.setattr(socket.socket, "connect", refuse)
    try:
      import importlib_resources  # pylint: disable=g-import-not-at-top,unused-import
    except ImportError:
      # TFDS 4.9.10 needs `importlib_resources` to prepare a dataset but declares it only for
      # Python < 3.9; the standard library module has the same API.
      import importlib.resources.abc  # pylint: disable=g-import-not-at-top
      mp.setitem(sys.modules, "importlib_resources", importlib.resources)
    yield


def _write(name, data_dir, splits, file_format=None):
  """Writes `splits` ({split: (images, labels)}) as the TFDS dataset `name` in `data_dir`.

  Uses the real builder's version and features, so the real builder reads it back; extra
  text features (cifar10's 'id', imagenet2012's 'file_name') get '<split>_<index>'.
  """
  tfds = tfds_source._import_tfds()  # pylint: disable=protected-access
  tfds.disable_progress_bar()
  real = tfds.builder(name, data_dir=data_dir)  # Not prepared: its info comes from code.
  features = type(real.info.features).from_json(real.info.features.to_json())
  extra = sorted(set(features.keys()) - {"image", "label"})

  def examples(split, images, labels):
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, dict({key: f"{split}_{i:05d}" for key in extra}, image=image, label=int(label))

  name, _, config = name.partition("/")  # A config, as in 'cifar10_corrupted/fog_3', or ''.
  tfds.dataset_builders.store_as_tfds_dataset(
      name=name, config=config or None, version=str(real.version), features=features,
      data_dir=data_dir, file_format=file_format, disable_shuffling=True,
      split_datasets={split: examples(split, *xy) for split, xy in splits.items()})


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tensorflow_datasets"))


def _random_split(rng, n, shape, num_classes):
  return (rng.integers(0, 256, (n, *shape), dtype=np.uint8),
          rng.integers(0, num_classes, n).astype(np.int32))


@pytest.fixture(scope="module")
def cifar10(data_dir):
  """A prepared 'cifar10' (TFRecord): {split: (x [n, 32, 32, 3] uint8, y [n] int32)}."""
  rng = np.random.default_rng(10)
  splits = {"train": _random_split(rng, N_TRAIN, (32, 32, 3), 10),
            "test": _random_split(rng, N_TEST, (32, 32, 3), 10)}
  _write("cifar10", data_dir, splits)
  return splits


@pytest.fixture(scope="module")
def mnist(data_dir):
  """A prepared 'mnist' stored as ArrayRecord: {split: (x [n, 28, 28, 1] uint8, y)}."""
  rng = np.random.default_rng(28)
  splits = {"train": _random_split(rng, N_TRAIN, (28, 28, 1), 10),
            "test": _random_split(rng, N_TEST, (28, 28, 1), 10)}
  _write("mnist", data_dir, splits, file_format="array_record")
  return splits


@pytest.fixture(scope="module")
def imagenet(data_dir):
  """A prepared 'imagenet2012' of JPEGs of varied sizes.

  'train': 30 textured images; 'validation': 10 images of one colour each, so that their
  preprocessed pixels are known. Returns {split: (images, labels)} and the colours [10, 3].
  """
  rng = np.random.default_rng(2012)
  sizes = rng.integers(40, 73, (30, 2))
  coarse = [rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8) for h, w in sizes]
  train = [c.repeat(8, 0).repeat(8, 1)[:h, :w] for c, (h, w) in zip(coarse, sizes)]
  colours = rng.integers(0, 256, (10, 3), dtype=np.uint8)
  val = [np.broadcast_to(c, (48 + 4 * i, 60, 3)).copy() for i, c in enumerate(colours)]
  splits = {"train": (train, rng.integers(0, 1000, 30)),
            "validation": (val, rng.integers(0, 1000, 10))}
  _write("imagenet2012", data_dir, splits)
  return splits, colours


def test_module_import_does_not_import_tensorflow():
  code = ("import sys, sms_jax.data.tfds_source; "
          "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'")
  root = pathlib.Path(tfds_source.__file__).resolve().parents[2]  # The checkout.
  subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


def test_load_arrays_round_trip(cifar10, data_dir):
  train, test, num_classes = tfds_source.load_arrays("cifar10", data_dir)
  assert num_classes == 10
  for split, (x, y) in (("train", train), ("test", test)):
    assert x.dtype == np.uint8 and y.dtype == np.int32
    np.testing.assert_array_equal(x, cifar10[split][0])
    np.testing.assert_array_equal(y, cifar10[split][1])


def test_load_arrays_array_record(mnist, data_dir):
  train, test, num_classes = tfds_source.load_arrays("mnist", data_dir)
  assert num_classes == 10 and train.x.shape == (N_TRAIN, 28, 28, 1)
  np.testing.assert_array_equal(train.x, mnist["train"][0])
  np.testing.assert_array_equal(test.y, mnist["test"][1])
  assert test.y.dtype == np.int32


def test_not_prepared_raises_with_the_command(tmp_path):
  with pytest.raises(tfds_source.DatasetNotPreparedError) as error:
    tfds_source.load_arrays("cifar10", str(tmp_path))
  message = str(error.value)
  assert "\n" not in message and isinstance(error.value, ValueError)
  assert f"tfds build cifar10 --data_dir={tmp_path}" in message
  assert not any(tmp_path.iterdir())  # Nothing was downloaded or written.


def test_not_prepared_imagenet_names_the_manual_download(tmp_path):
  with pytest.raises(tfds_source.DatasetNotPreparedError, match="manual_dir") as error:
    tfds_source.num_examples("imagenet2012", "train", str(tmp_path))
  assert "ILSVRC2012_img_train.tar" in str(error.value) and "\n" not in str(error.value)


def test_cifar10_corrupted_is_standardised_like_the_training_data(data_dir):
  rng = np.random.default_rng(3)
  written = {}
  for name in ("gaussian_noise", "contrast"):
    written[name] = _random_split(rng, N_TEST, (32, 32, 3), 10)
    _write(f"cifar10_corrupted/{name}_2", data_dir, {"test": written[name]})
  reference = rng.integers(0, 256, (N_TRAIN, 32, 32, 3), dtype=np.uint8)
  out = corruptions.tfds_cifar10_corrupted(data_dir, reference, ("gaussian_noise", "contrast"),
                                           severity=2)
  assert list(out) == ["gaussian_noise", "contrast"]
  for name, (x, y) in out.items():
    expected, = sms_jax.data.standardize(reference, written[name][0])
    np.testing.assert_allclose(x, expected, rtol=1e-6)
    np.testing.assert_array_equal(y, written[name][1])
    assert x.dtype == np.float32 and y.dtype == np.int32
  # One configuration missing: nothing, and no error.
  assert corruptions.tfds_cifar10_corrupted(data_dir, reference, ("contrast", "fog"), 2) is None


def test_cifar10_corrupted_not_prepared_is_none(tmp_path):
  reference = np.zeros((2, 32, 32, 3), np.uint8)
  assert corruptions.tfds_cifar10_corrupted(str(tmp_path), reference) is None
  assert not any(tmp_path.iterdir())  # Nothing was downloaded or written.


def test_num_examples_of_a_slice(imagenet, data_dir):
  del imagenet
  assert tfds_source.num_examples("imagenet2012", "train[:20%]", data_dir) == 6
  assert tfds_source.num_examples("imagenet2012", "train[20%:]", data_dir) == 24


def _stream(split, train, seed=0, epoch=0, name="imagenet2012", data_dir=None, batch_size=5):
  return list(tfds_source.stream_batches(name, split, batch_size=batch_size, seed=seed,
                                         epoch=epoch, train=train, data_dir=data_dir,
                                         image_size=IMAGE_SIZE))


def test_stream_eval_keeps_order_and_remainder(imagenet, data_dir):
  splits, colours = imagenet
  labels = splits["validation"][1]
  batches = _stream("validation", train=False, data_dir=data_dir, batch_size=4)
  assert [len(y) for _, y in batches] == [4, 4, 2]
  x = np.concatenate([x for x, _ in batches])
  y = np.concatenate([y for _, y in batches])
  assert x.dtype == np.float32 and x.shape == (10, IMAGE_SIZE, IMAGE_SIZE, 3)
  assert y.dtype == np.int32
  np.testing.assert_array_equal(y, labels)
  expected = (colours - np.array(tfds_source.IMAGENET_MEAN)) / np.array(tfds_source.IMAGENET_STD)
  np.testing.assert_allclose(x, np.broadcast_to(expected[:, None, None], x.shape), atol=0.05)


def test_stream_shards_split_the_examples_between_processes(imagenet, data_dir):
  """Each of 3 processes reads its own third of 'validation' (10 examples: 3 each, the
  remainder dropped); together, in order, they are the split's first 9."""
  labels = imagenet[0]["validation"][1]
  parts = [np.concatenate([y for _, y in tfds_source.stream_batches(
      "imagenet2012", "validation", batch_size=2, seed=0, epoch=0, train=False,
      data_dir=data_dir, image_size=IMAGE_SIZE, shard=(k, 3))]) for k in range(3)]
  assert [len(p) for p in parts] == [3, 3, 3]
  np.testing.assert_array_equal(np.concatenate(parts), labels[:9])


def test_stream_train_is_a_function_of_seed_and_epoch(imagenet, data_dir):
  labels = imagenet[0]["train"][1][6:]
  first = _stream("train[20%:]", train=True, epoch=0, data_dir=data_dir)
  again = _stream("train[20%:]", train=True, epoch=0, data_dir=data_dir)
  other = _stream("train[20%:]", train=True, epoch=1, data_dir=data_dir)
  assert [x.shape for x, _ in first] == [(5, IMAGE_SIZE, IMAGE_SIZE, 3)] * 4  # 24 // 5
  for (x, y), (x2, y2) in zip(first, again):
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
  assert not np.array_equal(np.stack([x for x, _ in first]), np.stack([x for x, _ in other]))
  y = np.concatenate([y for _, y in first])
  assert y.dtype == np.int32 and set(y) <= set(labels)
  low = (0 - np.array(tfds_source.IMAGENET_MEAN)) / np.array(tfds_source.IMAGENET_STD)
  high = (255 - np.array(tfds_source.IMAGENET_MEAN)) / np.array(tfds_source.IMAGENET_STD)
  x = np.concatenate([x for x, _ in first])
  assert np.all(x >= low - 1e-3) and np.all(x <= high + 1e-3) and x.std() > 0.5


def test_stream_train_decodes_png(cifar10, data_dir):
  del cifar10
  batches = _stream("train", train=True, name="cifar10", data_dir=data_dir, batch_size=16)
  assert [x.shape for x, _ in batches] == [(16, IMAGE_SIZE, IMAGE_SIZE, 3)] * 2
  assert batches[0][0].dtype == np.float32


def test_project_load(cifar10, data_dir):
  config = ml_collections.ConfigDict(dict(
      name="cifar10", data_dir=data_dir, val_fraction=0.1, augment="auto", num_train=0))
  dataset = sms_jax.data.load(config)
  assert dataset.augment == "crop_flip" and dataset.num_classes == 10
  assert len(dataset.train.y) == 36 and len(dataset.val.y) == 4
  assert len(dataset.test.y) == N_TEST and dataset.input_shape == (32, 32, 3)
  assert sms_jax.data.DATASETS["cifar10"].input_shape == dataset.input_shape
  for split in (dataset.train, dataset.val, dataset.test):
    assert split.x.dtype == np.float32 and split.y.dtype == np.int32
  rows = lambda x: {row.tobytes() for row in x}
  assert not rows(dataset.train.x) & rows(dataset.val.x)
  assert sorted(np.concatenate([dataset.train.y, dataset.val.y])) == sorted(cifar10["train"][1])
  np.testing.assert_allclose(dataset.train.x.mean(axis=(0, 1, 2)), 0, atol=1e-4)
  np.testing.assert_allclose(dataset.train.x.std(axis=(0, 1, 2)), 1, atol=1e-3)


def test_dense_training_on_a_stream(imagenet, data_dir, tmp_path, capsys):
  """The whole experiment on the streamed 'imagenet2012': hold-out slices, training, resume."""
  del imagenet
  config = default.get_config()
  config.dataset.name = "imagenet2012"
  config.dataset.data_dir = data_dir
  config.dataset.image_size = 32
  config.dataset.val_fraction = 0.2
  config.model.name = "cnn2d"
  config.train.update(epochs=2, batch_size=8, eval_batch_size=4)
  dataset = sms_jax.data.load(config.dataset)
  assert dataset.streaming and dataset.input_shape == (32, 32, 3)
  assert (dataset.train.split, dataset.val.split) == ("train[6:30]", "train[:6]")
  assert (dataset.train.num_examples, dataset.test.num_examples) == (24, 10)

  results = experiment.run(config, str(tmp_path))
  assert [r["epoch"] for r in results["history"]] == [1, 2]
  assert 0.0 <= results["final"]["test_accuracy"] <= 1.0
  capsys.readouterr()
  again = experiment.run(config, str(tmp_path))  # Complete: restores, trains no more.
  out = capsys.readouterr().out
  assert "resumed from checkpoint at epoch 2" in out and "epoch 2/2" not in out
  assert again["final"] == results["final"]


def test_cifar10_ood_sets_are_standardised_like_its_test_split(cifar10, data_dir):
  config = ml_collections.ConfigDict(dict(
      name="cifar10", data_dir=data_dir, val_fraction=0.1, augment="auto", num_train=0))
  dataset = sms_jax.data.load(config)
  assert dataset.ood_loader(5) is None  # Not prepared: SMS falls back to generated ones.
  for name in corruptions.CORRUPTIONS:  # "Corrupted" sets that hold the clean test images.
    _write(f"cifar10_corrupted/{name}_5", data_dir, {"test": cifar10["test"]})
  ood = dataset.ood_loader(5)
  assert list(ood) == list(corruptions.CORRUPTIONS)
  for split in ood.values():
    np.testing.assert_allclose(split.x, dataset.test.x, rtol=1e-6)
    np.testing.assert_array_equal(split.y, dataset.test.y)


def test_sms_on_a_stream(imagenet, data_dir, tmp_path):
  """SMS on the streamed 'imagenet2012': candidates read the stream in turn, soups keep masks."""
  del imagenet
  config = default.get_config()
  config.dataset.update(name="imagenet2012", data_dir=data_dir, image_size=32, val_fraction=0.2)
  config.model.name = "cnn2d"
  config.train.update(epochs=1, batch_size=8, eval_batch_size=4)
  config.update(strategy="sms")
  config.prune.update(goal_sparsity=0.75, n_phases=1)
  config.retrain.epochs_per_phase = 1
  config.soup.update(m=2, vary="seed,weight_decay")
  results = experiment.run(config, str(tmp_path))
  (phase,) = results["phases"]
  assert abs(phase["sparsity"] - 0.75) < 1e-3
  assert len(phase["candidates"]) == 2 and phase["ood"] == {}  # No OOD sets for streams.
  # Each candidate read its own order from the stream: their weights differ.
  assert phase["distances"]["pairwise_l2"][0][1] > 0
  assert 0.0 <= results["final"]["test_accuracy"] <= 1.0
