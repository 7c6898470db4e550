#!/usr/bin/env python
"""Throughput of the streaming ImageNet input path (`tfds_source.stream_batches`), offline.

1. Writes a synthetic dataset named `imagenet2012` with TFDS's own writer
   (`tfds.dataset_builders.store_as_tfds_dataset`, the real builder's version and feature spec,
   TFRecord files, shuffled like the real dataset) into `--data_dir`: `--num_train` 'train' and
   `--num_val` 'validation' JPEGs (quality `--quality`, 4:2:0) of varied sizes, 400-500 wide
   and 350-400 high, smooth gradients + blocky blobs + Gaussian noise (`--noise`), so that an
   image is about 100 kB like ImageNet's (about 110 kB on average); 1000 classes.
2. Times one epoch of `stream_batches(...)` per configuration: training (random resized crop +
   flip) and evaluation (resize + center crop) at 224, 160 and 128, two training epochs at
   224, the evaluation path over the larger train split at 224 (a longer sample than the
   validation split's), and the per-host shards 'train[:50%]' / 'train[50%:]', one after
   the other (each a host's share) and, with `--concurrent_shards`, both at once in two
   processes (two hosts on one machine).
   Rates count the images after the first batch over the time after it (the first batch
   waits for the shuffle buffer: with fewer than 10,000 examples, the whole split); the
   process's CPU time over the same interval gives the cores the pipeline keeps busy.
3. Checks that the same (seed, epoch) gives the same first batch and that another seed or
   epoch gives another order.

Nothing is downloaded; TFDS's GCS access is turned off. Run from the repository root:

  python bench/stream_imagenet.py --num_train 2000 --json /tmp/stream_bench/results.json
  python bench/stream_imagenet.py --num_train 300 --sizes 224 --concurrent_shards 0 \\
      --data_dir /tmp/stream_bench/quick  # quick

A dataset already in `--data_dir` with the same sizes is reused (`--reuse 0` rewrites it); one
with other sizes is rewritten, but only if this script wrote it (a marker file says so).
"""

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import time

_BENCH = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_BENCH)
for _p in (_BENCH, _ROOT):
  if _p not in sys.path:
    sys.path.insert(0, _p)

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

import machine  # pylint: disable=g-import-not-at-top,wrong-import-position
from sms_jax.data import tfds_source  # pylint: disable=g-import-not-at-top,wrong-import-position

NAME = "imagenet2012"
MARKER = "SYNTHETIC_STREAM_BENCH"  # In <data_dir>/imagenet2012/: this script may rewrite it.


def _offline():
  """No GCS lookups by TFDS (there is no network); the importlib_resources shim of the tests."""
  tfds = tfds_source._import_tfds()  # pylint: disable=protected-access
  from tensorflow_datasets.core.utils import gcs_utils  # pylint: disable=g-import-not-at-top
  gcs_utils._is_gcs_disabled = True  # pylint: disable=protected-access
  if importlib.util.find_spec("importlib_resources") is None:
    # TFDS 4.9.10 needs it to write a dataset; the stdlib has the same API.
    import importlib.resources  # pylint: disable=g-import-not-at-top
    import importlib.resources.abc  # pylint: disable=g-import-not-at-top,unused-import
    sys.modules["importlib_resources"] = importlib.resources
  return tfds


def _image(rng, h, w, noise):
  """An `[h, w, 3] uint8` image: smooth waves and gradients, 16-pixel blobs, pixel noise."""
  yy = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
  xx = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :]
  img = np.empty((h, w, 3), np.float32)
  for c in range(3):
    a, b, phase = rng.uniform(-1, 1, 3)
    fy, fx = rng.uniform(1.0, 6.0, 2)
    img[..., c] = (128 + 60 * np.sin(np.pi * fy * yy + phase) * np.cos(np.pi * fx * xx)
                   + 40 * (a * yy + b * xx))
  coarse = rng.normal(0, 25, (h // 16 + 1, w // 16 + 1, 3)).astype(np.float32)
  img += coarse.repeat(16, 0).repeat(16, 1)[:h, :w]
  img += noise * rng.standard_normal((h, w, 3), dtype=np.float32)
  return np.clip(img, 0, 255).astype(np.uint8)


def write_dataset(data_dir, num_train, num_val, noise, quality, seed=2012):
  """Writes the synthetic 'imagenet2012'; returns facts about it (times, sizes, feature spec)."""
  tfds = _offline()
  tf = tfds_source._import_tf()  # pylint: disable=protected-access
  tfds.disable_progress_bar()
  real = tfds.builder(NAME, data_dir=data_dir, try_gcs=False)  # Unprepared: info from code.
  features = type(real.info.features).from_json(real.info.features.to_json())
  extra = sorted(set(features.keys()) - {"image", "label"})  # 'file_name'
  rng = np.random.default_rng(seed)
  stats = {"bytes": 0, "n": 0, "encode_s": 0.0, "pixels": 0}

  def examples(split, n):
    for i in range(n):
      h, w = int(rng.integers(350, 401)), int(rng.integers(400, 501))
      tic = time.perf_counter()
      encoded = tf.io.encode_jpeg(_image(rng, h, w, noise), quality=quality).numpy()
      stats["encode_s"] += time.perf_counter() - tic
      stats["bytes"] += len(encoded)
      stats["n"] += 1
      stats["pixels"] += h * w
      yield i, dict({key: f"{split}_{i:07d}.JPEG" for key in extra}, image=encoded,
                    label=int(rng.integers(0, 1000)))

  tic = time.perf_counter()
  tfds.dataset_builders.store_as_tfds_dataset(
      name=NAME, version=str(real.version), features=features, data_dir=data_dir,
      disable_shuffling=False,  # As the real imagenet2012: files are shuffled in training.
      split_datasets={"train": examples("train", num_train),
                      "validation": examples("validation", num_val)})
  write_s = time.perf_counter() - tic
  return dict(write_s=write_s, generate_and_encode_s=stats["encode_s"],
              mean_jpeg_kb=stats["bytes"] / stats["n"] / 1e3,
              mean_pixels=stats["pixels"] / stats["n"], written=stats["n"])


def feature_facts(data_dir):
  """What `stream_batches` relies on: 'image' JPEG-encoded, 'label' with 1000 classes."""
  builder = tfds_source.prepared_builder(NAME, data_dir)
  image, label = builder.info.features["image"], builder.info.features["label"]
  files = sorted(os.listdir(builder.data_dir))
  return dict(
      version=str(builder.version), image_encoding=image.encoding_format,
      image_shape=str(image.shape), label_classes=label.num_classes,
      file_format=str(getattr(builder.info.file_format, "value", builder.info.file_format)),
      disable_shuffling=builder.info.disable_shuffling,
      splits={k: v.num_examples for k, v in builder.info.splits.items()},
      train_shards=sum(f.startswith(f"{NAME}-train.") for f in files),
      bytes_on_disk=sum(os.path.getsize(os.path.join(builder.data_dir, f)) for f in files))


def _cpu_s():
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


def time_epoch(data_dir, split, *, train, image_size, batch_size, seed=0, epoch=0,
               max_batches=None):
  """One epoch of `stream_batches`: rates after the first batch, first-batch latency, CPU use."""
  load0 = os.getloadavg()[0]
  tic, cpu_tic = time.perf_counter(), _cpu_s()
  it = tfds_source.stream_batches(NAME, split, batch_size=batch_size, seed=seed, epoch=epoch,
                                  train=train, data_dir=data_dir, image_size=image_size)
  x, y = next(it)
  t1, cpu1 = time.perf_counter(), _cpu_s()
  assert x.shape == (len(y), image_size, image_size, 3) and x.dtype == np.float32, x.shape
  first = dict(labels=y.tolist(), checksum=float(np.abs(x).sum(dtype=np.float64)))
  n_rest, n_batches = 0, 1
  for x, y in it:
    n_rest += len(y)
    n_batches += 1
    if max_batches and n_batches >= max_batches:
      break
  t2, cpu2 = time.perf_counter(), _cpu_s()
  rest_s = t2 - t1
  return dict(
      split=split, train=train, image_size=image_size, seed=seed, epoch=epoch,
      images=n_rest + len(first["labels"]), batches=n_batches, first_batch_s=t1 - tic,
      rest_s=rest_s, images_per_s=n_rest / rest_s if rest_s else float("nan"),
      total_images_per_s=(n_rest + len(first["labels"])) / (t2 - tic),
      cores_busy=(cpu2 - cpu1) / rest_s if rest_s else float("nan"),
      images_per_cpu_s=n_rest / (cpu2 - cpu1) if cpu2 > cpu1 else float("nan"),
      first_batch_cores=(cpu1 - cpu_tic) / (t1 - tic),
      load=[load0, os.getloadavg()[0]], first=first)


def concurrent_shards(args, splits):
  """Both shards at once, each in its own process (two 'hosts' sharing this machine)."""
  procs = []
  tic = time.perf_counter()
  for split in splits:
    cmd = [sys.executable, os.path.abspath(__file__), "--data_dir", args.data_dir,
           "--child_split", split, "--batch_size", str(args.batch_size)]
    procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True))
  rows = []
  for p in procs:
    out, _ = p.communicate()
    if p.returncode:
      raise RuntimeError(f"child failed ({p.returncode})")
    rows.append(json.loads(out.strip().splitlines()[-1]))
  wall = time.perf_counter() - tic
  return rows, wall


def _row(label, r, note=""):
  return (f"| {label} | {r['split']} | {r['image_size']} | {r['images']} | "
          f"**{r['images_per_s']:.0f}** | {r['total_images_per_s']:.0f} | "
          f"{r['first_batch_s']:.1f} | {r['cores_busy']:.2f} | {r['images_per_cpu_s']:.0f} | "
          f"{r['load'][0]:.1f}-{r['load'][1]:.1f} | {note} |")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--num_train", type=int, default=2000)
  parser.add_argument("--num_val", type=int, default=None, help="default: num_train // 5")
  parser.add_argument("--data_dir", default="/tmp/stream_bench/tensorflow_datasets")
  parser.add_argument("--reuse", type=int, default=1,
                      help="reuse a dataset already in --data_dir with the same sizes")
  parser.add_argument("--noise", type=float, default=26.0, help="pixel noise std (JPEG size)")
  parser.add_argument("--quality", type=int, default=90)
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--sizes", default="224,160,128")
  parser.add_argument("--epochs", type=int, default=2, help="training epochs timed at 224")
  parser.add_argument("--eval_on_train", type=int, default=1,
                      help="also time the eval path at 224 over the (larger) train split")
  parser.add_argument("--shards", type=int, default=1, help="time train[:50%%], train[50%%:]")
  parser.add_argument("--concurrent_shards", type=int, default=1)
  parser.add_argument("--json", default="")
  parser.add_argument("--child_split", default="", help=argparse.SUPPRESS)
  args = parser.parse_args()
  num_val = args.num_val if args.num_val is not None else args.num_train // 5
  _offline()

  if args.child_split:  # One shard of a concurrent run: print its row as JSON.
    r = time_epoch(args.data_dir, args.child_split, train=True, image_size=224,
                   batch_size=args.batch_size)
    print(json.dumps(r))
    return

  tf = tfds_source._import_tf()  # pylint: disable=protected-access
  info = dict(
      utc=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
      cpu=machine.cpu_model(), cores=os.cpu_count(), python=platform.python_version(),
      tensorflow=tf.__version__, tfds=importlib.metadata.version("tensorflow-datasets"),
      jax=importlib.metadata.version("jax"), load_start=os.getloadavg(),
      command=" ".join(["python"] + sys.argv))
  print(json.dumps(info), flush=True)

  written = None
  try:
    facts = feature_facts(args.data_dir)
    if not args.reuse or facts["splits"] != {"train": args.num_train, "validation": num_val}:
      raise tfds_source.DatasetNotPreparedError("other sizes")
    print("reusing the dataset in", args.data_dir, flush=True)
  except tfds_source.DatasetNotPreparedError:
    folder = os.path.join(args.data_dir, NAME)
    if os.path.exists(folder):  # Only ever delete a dataset this script wrote.
      if not os.path.exists(os.path.join(folder, MARKER)):
        sys.exit(f"{folder} exists and was not written by this script; not touching it. "
                 f"Pass another --data_dir.")
      import shutil  # pylint: disable=g-import-not-at-top
      shutil.rmtree(folder)
    written = write_dataset(args.data_dir, args.num_train, num_val, args.noise, args.quality)
    with open(os.path.join(folder, MARKER), "w") as f:
      f.write("synthetic data written by bench/stream_imagenet.py\n")
    written["load"] = os.getloadavg()
    print("written:", json.dumps(written), flush=True)
    facts = feature_facts(args.data_dir)
  print("features:", json.dumps(facts), flush=True)
  assert facts["image_encoding"] == "jpeg" and facts["label_classes"] == 1000, facts

  rows = []

  def run(label, split, note="", **kw):
    r = time_epoch(args.data_dir, split, batch_size=args.batch_size, **kw)
    r["label"], r["note"] = label, note
    rows.append(r)
    print(_row(label, r, note), flush=True)
    return r

  print("| config | split | size | images | img/s after 1st batch | img/s incl. 1st | "
        "1st batch s | cores busy | img per CPU-s | load | note |", flush=True)
  sizes = [int(s) for s in args.sizes.split(",")]
  ref = None
  for size in sizes:
    epochs = args.epochs if size == 224 else 1
    for e in range(epochs):
      r = run(f"train e{e}", "train", train=True, image_size=size, epoch=e)
      if size == 224 and e == 0:
        ref = r
    run("eval", "validation", train=False, image_size=size)
    if size == 224 and args.eval_on_train:
      run("eval (longer sample)", "train", "eval preprocessing of the train split",
          train=False, image_size=size)
  if args.shards:
    run("train shard 0/2", "train[:50%]", train=True, image_size=224)
    run("train shard 1/2", "train[50%:]", train=True, image_size=224)
  again = run("train e0 (repeat)", "train", "drift control + determinism", train=True,
              image_size=224 if 224 in sizes else sizes[0], epoch=0)
  if ref is None:
    ref = rows[0]

  conc = None
  if args.concurrent_shards:
    load0 = os.getloadavg()[0]
    children, wall = concurrent_shards(args, ["train[:50%]", "train[50%:]"])
    conc = dict(rows=children, wall_s_incl_process_start=wall,
                sum_images_per_s=sum(c["images_per_s"] for c in children),
                load=[load0, os.getloadavg()[0]])
    for c in children:
      print(_row("concurrent shard", c, "2 processes at once"), flush=True)
    print(f"concurrent shards: sum {conc['sum_images_per_s']:.0f} img/s", flush=True)

  # Determinism: the same (seed, epoch) twice; another seed; another epoch (first batches).
  seed1 = time_epoch(args.data_dir, "train", train=True, image_size=sizes[-1],
                     batch_size=args.batch_size, seed=1, epoch=0, max_batches=1)
  e1 = next((r for r in rows if r["label"] == "train e1" and r["image_size"] == 224), None)
  checks = dict(
      same_seed_epoch_same_labels=ref["first"]["labels"] == again["first"]["labels"],
      same_seed_epoch_same_pixels=ref["first"]["checksum"] == again["first"]["checksum"],
      other_seed_other_labels=seed1["first"]["labels"] != ref["first"]["labels"],
      other_epoch_other_labels=(e1["first"]["labels"] != ref["first"]["labels"]) if e1 else None,
      first_labels_seed0=ref["first"]["labels"][:8], first_labels_seed1=seed1["first"]["labels"][:8],
  )
  print("checks:", json.dumps(checks), flush=True)
  info["load_end"] = os.getloadavg()
  if args.json:
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    for r in rows:
      r["first"]["labels"] = r["first"]["labels"][:8]
    with open(args.json, "w") as f:
      json.dump(dict(info=info, written=written, features=facts, rows=rows, concurrent=conc,
                     checks=checks), f, indent=1)


if __name__ == "__main__":
  main()
