"""Base configuration for Diff-DMX (Plaja-Roglans et al., 2025).

Every number the paper states is here with its value; every unknown has a default with a short note
(`docs/paper.md` lists and explains each choice). Experiment files in
this folder import `get_config()` and override what differs. Override anything from the command line:

    diffvox train --config configs/diffdmx_rt.py --workdir runs/rt --config.optim.peak_lr=1e-4

Conventions: audio arrays are `(time, channels)` on disk and `(batch, time, channels)` in the model; lengths are
in samples at `data.sample_rate`; a cut-off of 0 Hz means "no filter" (white refinement noise).
"""

import ml_collections

PAPER_FACTORS = (1, 2, 4, 1, 4, 1, 4)
PAPER_BLOCKS = (1, 1, 1, 2, 2, 2, 2)
DEEPEST_FOUR = (False, False, False, True, True, True, True)
# Levels whose blocks run at D/32 (levels 6 and 7 with the paper's factors): where our default attends; the literal
# DEEPEST_FOUR would attend at D/8 too (16,384 tokens per 3 s chunk), see diffvox_jax/models/__init__.py.
DEEPEST_TWO = (False, False, False, False, False, True, True)


def get_config() -> ml_collections.ConfigDict:
  """Returns the base config: the paper's RT model trained on MUSDB18-HQ."""
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = data = ml_collections.ConfigDict()
  data.sample_rate = 44100  # [C] 44.1 kHz.
  data.channels = 2  # [C] stereo.
  data.segment = 131072  # [I] 2**17 samples = 2.97 s, the paper's "3 s" chunk; a multiple of 128.
  data.data_dir = '~/tensorflow_datasets'  # where `diffvox prepare` wrote the tfds datasets.
  data.sources = 'musdb18hq:1.0'  # comma-separated `name:weight` list of prepared tfds datasets.
  data.train_split = 'train'
  data.eval_split = 'validation'
  data.silence_threshold_db = -60.0  # [?] vocal crop RMS (dBFS) below which the crop counts as silent.
  data.silent_keep_prob = 0.05  # [C] "we discard 95% of the silent vocal samples".
  data.worker_count = 0  # grain worker processes (0 = in the main process).
  data.prefetch = 2  # batches prepared ahead of the train step.
  data.read_threads = 2  # threads preparing batches in each process (grain ReadOptions.num_threads).
  data.augment = augment = ml_collections.ConfigDict()
  augment.remix_prob = 0.5  # [?] accompaniment (or stems) taken from other tracks.
  augment.remix_stems_prob = 0.5  # [?] of the remixed crops, the share rebuilt stem by stem where stems exist.
  augment.gain_prob = 1.0  # [?] random gain per stem.
  augment.gain_db = 6.0  # [?] uniform in [-gain_db, +gain_db].
  augment.polarity_prob = 0.5  # [C] polarity inversion (probability [?]).
  augment.swap_prob = 0.5  # [C] left/right swap (probability [?]).
  augment.pitch_prob = 0.3  # [C] pitch shift (probability [?]).
  augment.pitch_semitones = 2  # [?] shift drawn from {-n..n} \ {0}, applied to all stems together.

  config.model = model = ml_collections.ConfigDict()
  # 'waveform': the paper's 1-D U-Nets (below). 'spectral': a recurrent mask network over STFT frames as the
  # conditioner and a recurrent STFT-domain generator (diffvox_jax/models/spectral.py). 'mask': that conditioner
  # alone, the Open-Unmix-style discriminative baseline (sampler.steps must be 0).
  model.kind = 'waveform'
  model.spectral = spectral = ml_collections.ConfigDict()
  spectral.n_fft = 1024  # [?] Open-Unmix's at 16 kHz; a multiple of hop.
  spectral.hop = 256  # audio lengths must be multiples of it (it replaces prod(factors)).
  spectral.hidden = 256  # BLSTM width (both directions) and frame-feature width of the conditioner.
  spectral.layers = 3  # conditioner BLSTM layers (Open-Unmix: 3).
  spectral.generator_hidden = 256
  spectral.generator_layers = 2
  spectral.fourier_features = 64  # random Fourier features of sigma in the generator.
  spectral.residual = True  # the generator corrects the conditioner's mask (x0_hat starts as the direct estimate).
  spectral.detach_conditioner = True  # no L_diff gradient into the conditioner (it trains on L_rec alone).
  # A trained 'mask' or 'spectral' model (packaged name or folder) whose conditioner initialises this one (for
  # kind 'mask': fine-tuning it); with freeze_conditioner the generator alone trains, refining that model's fixed
  # estimate. '' = random init.
  spectral.conditioner_from = ''
  spectral.freeze_conditioner = False
  # The diffusion.data_scale the conditioner was trained at (0 = this config's): it reads the mixture in those units.
  spectral.conditioner_data_scale = 0.0
  spectral.generator_sees_mixture = False  # the generator's frame input adds log1p|M| and the conditioner's mask.
  spectral.dropout = 0.0  # [?] between the conditioner's BLSTM layers in training (Open-Unmix uses 0.4).
  model.dtype = 'float32'  # compute dtype: 'float32' or 'bfloat16' (parameters stay float32).
  model.attention_impl = 'auto'  # 'auto' | 'xla' | 'cudnn' | 'blockwise' (memory-efficient, any device).
  model.attention_block = 1024  # query block length of the blockwise attention.
  # Rematerialisation: '' (none), or a jax.checkpoint_policies name ('nothing_saveable' recomputes everything,
  # 'dots_with_no_batch_dims_saveable' keeps the matmul outputs) under which every residual block, self-attention
  # and transformer layer is recomputed in the backward pass: less activation memory for more compute.
  model.remat = ''
  model.factors = PAPER_FACTORS  # [C] time down-sampling per level, shared by generator and conditioner.

  model.generator = gen = ml_collections.ConfigDict()
  gen.channels = 32  # [C] channels at the first level, doubled at every factor > 1.
  gen.blocks = PAPER_BLOCKS  # [C] residual blocks per level.
  # [?] The paper says the 4 deepest levels; wide attention at D/8 is implausibly costly (about 2.6 TFLOP per 3 s
  # forward, see diffvox_jax/models/__init__.py), so the default attends at the D/32 levels only; the literal
  # reading, with narrow attention at D/8, is configs/diffdmx_rt_literal.py.
  gen.attention = DEEPEST_TWO
  gen.inject = DEEPEST_FOUR  # [C] conditioner features injected in the 4 deepest levels.
  gen.kernel_size = 3  # [?] a-unet default.
  gen.groups = 8  # [?] GroupNorm groups.
  gen.attention_heads = 8  # [?]
  gen.attention_head_dim = 32  # [?] chosen to meet the parameter count and a plausible compute budget.
  gen.attention_heads_per_level = ()  # heads at each level (used where `attention` is on); () = attention_heads.
  gen.fourier_features = 1024  # [C] random Fourier feature channels of sigma (sin and cos of 512 frequencies).
  gen.modulation_features = 512  # [?] width of the 3-layer GELU MLP fed to every FiLM (meets 15.9 M params).
  gen.bottleneck_blocks = 1  # [?] residual blocks at the deepest resolution, between encoder and decoder.
  gen.bottleneck_attention = False  # [?] self-attention after each bottleneck block.

  model.conditioner = cond = ml_collections.ConfigDict()
  cond.channels = 128  # [C] channels at the first level, doubled at every factor > 1 (2048 at the bottleneck).
  cond.kernel_sizes = (5, 3, 3)  # [?] UNIVERSE's kernels for the three convs of a block.
  cond.groups = 8  # [?]
  cond.compression = 2  # [?] the residual branch of a block runs at channels // compression (Demucs' DConv).
  cond.attention = DEEPEST_TWO  # [?] the paper's "4 deepest levels" read as for the generator (RT variant).
  cond.attention_heads = 8  # [?]
  cond.attention_head_dim = 64  # [?]
  cond.attention_heads_per_level = ()  # heads at each level (used where `attention` is on); () = attention_heads.
  cond.transformer_layers = 6  # [C] rotary-position transformer at the bottleneck (RT variant); 0 = none.
  cond.transformer_dim = 512  # [?] projected width inside the transformer.
  cond.transformer_heads = 8  # [?]
  cond.transformer_mlp_ratio = 4  # [?]
  cond.latent_tap = 'before_transformer'  # [?] where L_lat's head reads the bottleneck.

  config.diffusion = diffusion = ml_collections.ConfigDict()
  diffusion.v_weight = 1.0  # [C] L_diff.
  diffusion.latent_weight = 1.0  # [?] weight of L_lat (Eq. 11).
  diffusion.reconstruction_weight = 1.0  # [?] weight of L_rec (Eq. 12).
  # 'mse' [C]: Eq. 12, the squared error. 'sdr': minus each crop's SDR in dB, averaged over the batch (each crop's
  # error counts relative to its own vocals, as in the per-clip uSDR the benchmarks report), with both energies
  # floored 30 dB below the crop's mixture energy (diffusion.reconstruction_loss).
  diffusion.reconstruction_loss = 'mse'
  # [C] 'uniform': the paper's plain v-MSE, which weights the x0 error by 1 + SNR. 'min_snr': Min-SNR-gamma
  # (Hang et al., 2023), x0 error weighted by min(SNR, gamma), i.e. v-MSE times min(SNR, gamma) / (1 + SNR).
  diffusion.loss_weighting = 'uniform'
  diffusion.min_snr_gamma = 5.0
  # 'vocals' [C]: the generator diffuses the vocals (the paper). 'residual': it diffuses vocals minus the
  # conditioner's direct estimate (H_128, gradient stopped), and the sampler adds that estimate back, so sampling
  # refines the one-pass estimate with training and sampling seeing the same distribution (cf. StoRM, SGMSE).
  diffusion.target = 'vocals'
  # [?] The network works on audio multiplied by data_scale = k: mixture and vocals in training, mixture and
  # initial estimate in sampling, whose result is divided by it. 1.0 is the paper's raw waveform; vocals near
  # 0.05 RMS then sit below the noise at almost every training sigma, so small, briefly trained models need about
  # 10 (configs/demo.py). k != 1 is not neutral: it shifts every sigma's log-SNR by 2 ln k, multiplies the
  # auxiliary losses (L_lat, L_rec) by k^2 against L_diff, and makes the sampler's refinement noise 20 log10 k dB
  # weaker relative to the vocals, so the paper's eta and cut-off optimum need not carry over (docs/paper.md).
  diffusion.data_scale = 1.0

  config.sampler = sampler = ml_collections.ConfigDict()
  sampler.steps = 50  # [C] T, the number of network evaluations (headline results); 0 = the direct estimate (H_128).
  sampler.method = 'ddim'  # [C] the paper's; also 'dpmpp_2m' (DPM-Solver++(2M)) and 'heun' (EDM's 2nd order).
  sampler.schedule = 'linear'  # [I] sigma = linspace(1, 0, T + 1); also 'cosine', 'edm', 'log_snr'.
  sampler.eta = 0.4  # [C] best setting of Table 2.
  sampler.cutoff_hz = 5000.0  # [C] best setting of Table 2; 0 = white refinement noise.
  sampler.filter_order = 4  # [C] Butterworth order.
  sampler.num_samples = 1  # samples per chunk, averaged.
  sampler.sigma_start = 1.0  # < 1 refines an existing estimate from that noise level ...
  sampler.start = 'noise'  # ... 'direct': the conditioner's own estimate (H_128); 'noise': one passed in (--refine).
  sampler.chunk = 131072  # [C] 3 s chunks (2**17 samples at 44.1 kHz) ...
  sampler.overlap = 0.2  # [C] ... with 20% overlap-add.
  sampler.batch_size = 4  # chunks per sampler call.

  config.train = train = ml_collections.ConfigDict()
  train.batch_size = 32  # [C] global batch over all devices and hosts.
  train.num_steps = 1_000_000  # [C]
  train.steps_per_dispatch = 1  # optimizer steps per jitted call (lax.scan).
  # Micro-batches per optimizer step (gradients summed in a lax.scan): the activation memory of batch_size / k with
  # the update of the whole batch. It must divide the per-device batch.
  train.accumulation_steps = 1
  # With several processes, how often (in steps) the hosts agree on a stop signal: a global barrier that waits
  # for the dispatched steps. A SIGTERM is acted on within this many steps (keep it well inside the grace period).
  train.stop_poll_every = 10
  # While a dispatch computes, the host reads the next dispatch's batches, copies them to the devices and reports the
  # previous one. False waits for each dispatch first (the synchronous loop, kept to measure what overlap gains).
  train.prefetch_to_device = True
  train.ema_decay = 0.999  # [?]
  train.log_every = 100
  train.checkpoint_every = 5000
  train.keep_checkpoints = 3
  train.eval_every = 5000
  train.eval_batches = 8
  train.eval_audio_clips = 2  # validation crops separated every eval_every steps (TensorBoard audio, best/); 0 = off.
  train.distributed = False  # call jax.distributed.initialize() (multi-host TPU pods / GPU clusters).
  # Persistent XLA compilation cache of `diffvox train`, so a restarted or preempted run skips compiling:
  # 'workdir' = WORKDIR/xla_cache, or a folder (gs:// works), or '' for none. JAX_COMPILATION_CACHE_DIR, when set,
  # wins (one cache shared by several runs).
  train.compilation_cache = 'workdir'

  config.optim = optim = ml_collections.ConfigDict()
  optim.peak_lr = 2e-4  # [?] open-universe's value.
  optim.warmup_steps = 10_000  # [?]
  optim.end_lr_factor = 0.01  # [?] cosine decay ends at peak_lr * end_lr_factor.
  optim.weight_decay = 1e-3  # [C] AdamW.
  optim.b1 = 0.9  # [?]
  optim.b2 = 0.99  # [?]
  optim.eps = 1e-8  # [?]
  optim.grad_clip = 1.0  # [?] global-norm clipping; 0 = off.

  config.eval = evaluation = ml_collections.ConfigDict()
  evaluation.dataset = 'musdb18hq'  # [C] MUSDB18-HQ ...
  evaluation.split = 'test'  # [C] ... 50-track test set.
  evaluation.runs = 5  # [C] stochastic settings: 5 runs, mean reported.
  evaluation.museval = True  # also BSS Eval v4 (SDR/SIR/SAR/ISR over 1 s frames).
  evaluation.museval_window_s = 1.0
  return config
