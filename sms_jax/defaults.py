"""The base config: every key the project knows, with its default.

Experiment configs (configs/*.py) start from `configs/default.py`, which re-exports this
`get_config`, and change values; they never add keys: this config is the schema that
`sms_jax.config.validate` checks every config against.
"""

import ml_collections


def check_config_arg(arg: str, allowed: str, ok: bool) -> None:
  """Raises ValueError for a `--config=file.py:arg` that the config file does not know."""
  if arg and not ok:
    raise ValueError(f"unknown config argument {arg!r}; allowed: {allowed}")


def get_config() -> ml_collections.ConfigDict:
  """Returns the default config (MNIST-1D, 1-D CNN, dense training)."""
  config = ml_collections.ConfigDict()
  # dense | imp | imp_mx | sms | gmp | gmp_mx | sms_gmp | dpf | sms_dpf | bimp | sms_bimp |
  # imp_avg_reprune | set | rigl | granet | sms_rigl | sms_granet | edge_popup: see README
  # (sms_jax.strategies.STRATEGIES is the registry).
  config.strategy = "dense"
  config.seed = 0
  # Start from the finished dense pretraining of another run's workdir instead of pretraining
  # ('' = pretrain here). Its dataset, model, train, init_mask, seed and prune.keep_*_dense
  # must be this config's; only strategies whose first stage is the full pretraining take it
  # (dense, imp, imp_mx, sms, imp_avg_reprune). See README "Shared pretraining".
  config.pretrained = ""

  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = "mnist1d"
  config.dataset.data_dir = ""  # TFDS data_dir; '' = TFDS's default (~/tensorflow_datasets).
  config.dataset.val_fraction = 0.1  # Held out of the official train split.
  # auto (the dataset's own) | none | crop | crop_flip | flip | crop_flip_rotate (crop, flip,
  # then a random rotation of up to 15 degrees: the SMS reference's CIFAR-100 augmentation).
  config.dataset.augment = "auto"
  config.dataset.num_train = 0  # Use only the first n training examples; 0 = all.
  config.dataset.image_size = 224  # Streaming datasets (ImageNet) only: side of the crops.

  config.model = ml_collections.ConfigDict()
  config.model.name = "cnn1d"

  config.train = ml_collections.ConfigDict()
  config.train.epochs = 60
  config.train.batch_size = 128
  config.train.eval_batch_size = 1000
  config.train.learning_rate = 0.05  # Peak learning rate.
  config.train.weight_decay = 5e-4
  config.train.momentum = 0.9
  config.train.nesterov = False
  config.train.schedule = "cosine"  # constant | linear | cosine | step | multistep
  config.train.warmup_epochs = 0.0
  config.train.milestones = (0.5, 0.75)  # multistep: fractions of train.epochs.
  config.train.step_epochs = 30  # step: decay every this many epochs.
  config.train.decay_factor = 0.1  # step / multistep: multiply the LR by this.
  config.train.label_smoothing = 0.0
  config.train.eval_every_epochs = 1
  # sgd: PyTorch's SGD (coupled weight decay, momentum, Nesterov if train.nesterov);
  # adamw: Adam (b1 = train.momentum, b2 = 0.999) with decoupled weight decay.
  config.train.optimizer = "sgd"
  config.train.epoch_loop = "auto"  # auto | scan | steps: how an in-memory epoch runs.
  # Compute dtype: auto | float32 | bfloat16. Parameters, masks' targets, optimizer state,
  # BatchNorm statistics and logits stay float32. auto: bfloat16 on GPU/TPU, float32 on CPU.
  config.train.dtype = "auto"

  # Start sparse: a mask at initialisation (every strategy trains inside it; pruning only
  # removes more). distribution 'none' starts dense.
  config.init_mask = ml_collections.ConfigDict()
  # none | uniform | er | erk | balanced | pyramidal | global (snip / synflow only).
  config.init_mask.distribution = "none"
  config.init_mask.density = 0.3  # Global density of the prunable weights.
  config.init_mask.method = "random"  # random (exact counts per layer) | bernoulli | snip | synflow
  config.init_mask.score_batches = 10  # snip: training batches its gradients are summed over.
  # Rescale each sparse layer's init (density d_l < 1): none | density (multiply by
  # 1/sqrt(d_l)) | fan_in (redraw from N(0, 2 / (fan_in * d_l)), fan_in = the product of the
  # kernel's dims but the last: the random-pruning reference's re-initialisation).
  config.init_mask.rescale = "none"
  # snip / synflow only: score only the weights alive in a random start mask (exact counts, as
  # a random start of that distribution would draw) of global density within_density, and keep
  # the best of them down to `density`: none (score the dense network) | uniform | er | erk |
  # balanced | pyramidal. within_density must exceed density.
  config.init_mask.within = "none"
  config.init_mask.within_density = 0.5

  # Pruning phases (strategies imp, imp_mx, sms): phase k prunes to sparsity
  # 1 - (1 - goal_sparsity) ** (k / n_phases) of the prunable weights (from a sparse start:
  # geometric from its sparsity). gmp and sms_gmp prune to goal_sparsity by `gradual`.
  config.prune = ml_collections.ConfigDict()
  config.prune.goal_sparsity = 0.9
  config.prune.n_phases = 3
  config.prune.selector = "global"  # global | uniform | random
  config.prune.keep_first_dense = False  # Never prune the first conv / dense kernel.
  config.prune.keep_last_dense = False  # Never prune the classifier.

  # Gradual magnitude pruning (strategies gmp, sms_gmp): the sparsity rises from the initial
  # mask's s_0 to s_f = prune.goal_sparsity along s_f + (s_0 - s_f) * (1 - t / T) ** 3
  # between these epochs of the training run (t: steps since start_epoch, T: to end_epoch).
  # gmp updates the mask every update_every steps; sms_gmp at prune.n_phases phase starts.
  # The same schedule drives dpf (masks from dense weights kept beside them, every
  # update_every steps), sms_dpf (at the phase starts) and gmp_mx (sms_gmp's phases, one
  # model, each soup.m times longer).
  # Selector: prune.selector, global or uniform (layerwise).
  config.gradual = ml_collections.ConfigDict()
  config.gradual.start_epoch = 10
  config.gradual.end_epoch = 45
  config.gradual.update_every = 100  # Steps between gmp's mask updates.

  # Dynamic sparse training with regrowth (strategy set): every update_every steps until
  # end_epoch (0: train.epochs), each layer drops drop_fraction of its alive weights (the
  # smallest magnitudes) and regrows as many at random; decay: constant | cosine (the
  # fraction falls to 0 along a cosine by end_epoch). The density stays the start mask's.
  config.regrow = ml_collections.ConfigDict()
  config.regrow.update_every = 100
  config.regrow.drop_fraction = 0.3
  config.regrow.end_epoch = 0
  config.regrow.decay = "constant"

  # Regrowth by gradient (strategies rigl, granet; Evci et al., 2020 / Liu et al., 2021): at
  # an update t every layer drops alpha_t = drop_fraction * (1 + cos(pi * t / T_end)) / 2 of
  # its alive weights (the smallest magnitudes) and regrows as many where the dense
  # gradient's magnitude is largest (new weights at 0); T_end = end_fraction of the run's
  # steps, no regrowth after it. rigl updates every update_every steps and keeps the start
  # mask's layer densities; granet updates at gradual's steps, after pruning to its schedule;
  # sms_rigl and sms_granet update at their phase starts only (gradual.*, prune.n_phases).
  config.rigl = ml_collections.ConfigDict()
  config.rigl.update_every = 100  # Steps between rigl's mask updates (RigL's delta T).
  config.rigl.drop_fraction = 0.3  # alpha, the fraction dropped at t = 0.
  config.rigl.end_fraction = 0.75

  # Edge-Popup (strategy edge_popup; Ramanujan et al., 2020): every weight stays at its random
  # init and a score per prunable weight is trained (train.*: optimizer, schedule, weight
  # decay on the scores); each layer uses its top round(d_l * n_l) scores' weights, d_l from
  # init_mask.distribution and init_mask.density. init of every conv / dense kernel:
  # signed_constant (+-sqrt(2 / fan_in), random signs) | kaiming_normal (N(0, 2 / fan_in)).
  config.edge_popup = ml_collections.ConfigDict()
  config.edge_popup.init = "signed_constant"

  config.retrain = ml_collections.ConfigDict()
  config.retrain.schedule = "llr"  # ft | lrw | slr | clr | llr | allr | full
  config.retrain.epochs_per_phase = 10  # imp_mx retrains soup.m times longer.
  # Lottery-ticket weight rewinding (imp, imp_mx, sms): each phase prunes the trained model,
  # then trains its candidates from the weights (and BatchNorm statistics) of the rewind
  # point under the new mask: none (go on from the pruned model) | init (the initialisation)
  # | epoch:K (pretraining epoch K, Frankle et al.'s stabilised variant; K <= train.epochs).
  config.retrain.rewind = "none"

  # Budgeted IMP (strategies bimp, sms_bimp): the budget of imp / sms, train.epochs +
  # prune.n_phases * retrain.epochs_per_phase, spent as a dense run of pretrain_epochs
  # (at most train.epochs; train.schedule compressed into them), then prune.n_phases ALLR
  # phases sharing the rest equally (train.epochs - pretrain_epochs must divide evenly),
  # always retrained with allr (retrain.schedule is not used). 0: the phases get about half
  # the budget, at least retrain.epochs_per_phase each.
  config.bimp = ml_collections.ConfigDict()
  config.bimp.pretrain_epochs = 0

  # Averaging lineages with different masks (strategy imp_avg_reprune): per phase, soup.m
  # lineages train diverge_epochs from the phase's start, each prunes itself to the phase's
  # sparsity and retrains its retrain.epochs_per_phase; their average is pruned back to that
  # sparsity and retrained retrain_epochs.
  config.avg_reprune = ml_collections.ConfigDict()
  config.avg_reprune.diverge_epochs = 2
  config.avg_reprune.retrain_epochs = 2

  # The m candidates of a phase (sms) and how they are souped.
  config.soup = ml_collections.ConfigDict()
  config.soup.m = 4
  config.soup.method = "uniform"  # uniform | greedy
  # What differs between candidates: comma-separated names of seed, weight_decay,
  # learning_rate (the retraining peak), retrain_epochs. Each varied name takes its values
  # from the list below (m entries) or, if that is empty, from a default spread.
  config.soup.vary = "seed"
  config.soup.seeds = ()  # Offsets added to the data seed; default 0, 1, ..., m-1.
  config.soup.weight_decays = ()  # Default: train.weight_decay * 2 ** linspace(-1, 1, m).
  config.soup.learning_rates = ()  # Default: the peak * linspace(0.5, 1.5, m).
  config.soup.retrain_epochs = ()  # Default: epochs_per_phase * linspace(0.5, 1.5, m).
  # BatchNorm statistics recomputed before a model is evaluated, on the first
  # bn_recalibration_frac of the training split: all = every model a phase evaluates (each
  # candidate, the IMP model, the soup; the reference's), soups = soups only, none = never
  # (a soup keeps the mean of its candidates' statistics). Average: cumulative = the exact
  # mean over unaugmented batches; ema = the reference's exponential average (momentum 0.1,
  # from reset statistics) over augmented batches.
  config.soup.bn_recalibration = "all"  # all | soups | none
  config.soup.bn_recalibration_average = "cumulative"  # cumulative | ema
  config.soup.bn_recalibration_frac = 0.2

  config.parallel = ml_collections.ConfigDict()
  config.parallel.candidate_execution = "auto"  # auto | vmap | map | loop

  config.ood = ml_collections.ConfigDict()
  # Corruption severity of the OOD test sets: 1-5, 'all' (each set holds the five severities,
  # its accuracy is their mean, as CIFAR-C papers report) or 0 (no OOD evaluation). An int or
  # a string, hence the untyped field (--config.ood.severity=all parses).
  config.ood.severity = ml_collections.FieldReference(3, field_type=object)
  # Which corruptions (sms_jax.data.corruptions): default (six cheap ones: gaussian, shot,
  # impulse and speckle noise, gaussian_blur, contrast), all (images: the 18 of CIFAR-10-C's
  # code that need no image files; 1-D signals: their 6 analogues) or comma-separated names.
  # Each set costs a forward pass over the test set per phase (five with severity 'all').
  config.ood.corruptions = "default"

  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.every_epochs = 1
  # A save due by every_epochs is skipped if the last save (or the start of the stage) was
  # less than this many seconds ago; the last epoch of a stage is always saved. A kill loses
  # at most about this much training; resumed results are the same either way.
  config.checkpoint.min_interval_s = 0.0
  config.checkpoint.keep = 2
  return config
