"""Loading, overriding and validating ml-collections configs outside absl (tests, experiments, checkpoints).

The command line uses `ml_collections.config_flags` (see `cli.py`); both paths end in `validate`.
"""

import importlib.util
import json
import math
import pathlib
from collections.abc import Iterable
from typing import Any

import jax
import ml_collections

from diffvox_jax import diffusion
from diffvox_jax import sampler as sampler_lib

CONFIG_DIR = pathlib.Path(importlib.util.find_spec('diffvox_jax.configs').origin).parent  # configs/, installed here
DTYPES = ('float32', 'bfloat16')
ATTENTION_IMPLS = ('auto', 'xla', 'cudnn', 'blockwise')
LATENT_TAPS = ('before_transformer', 'after_transformer')
MODEL_KINDS = ('waveform', 'spectral', 'mask')
LOSS_WEIGHTINGS = ('uniform', 'min_snr')
# Where a `SamplerSettings` field comes from in a config (the rest are `sampler.<field>`).
SETTINGS_FIELDS = {'target': 'diffusion.target', 'data_scale': 'diffusion.data_scale',
                   'sample_rate': 'data.sample_rate'}


class ConfigError(ValueError):
  """A config value that cannot work, with the field name in the message."""


def resolve_config_path(name_or_path: str) -> pathlib.Path:
  """Returns the config file for a path, or for a bare name such as `cpu_tiny` found in `configs/`."""
  path = pathlib.Path(name_or_path).expanduser()
  if path.is_file():
    return path
  candidate = CONFIG_DIR / f'{path.stem}.py'
  if candidate.is_file():
    return candidate
  raise ConfigError(f'{name_or_path}: no such config file (known: {", ".join(known_configs())})')


def known_configs() -> list[str]:
  return sorted(p.stem for p in CONFIG_DIR.glob('*.py') if not p.stem.startswith('_') and p.stem != 'base')


def load_config(name_or_path: str, overrides: Iterable[str] = ()) -> ml_collections.ConfigDict:
  """Loads `get_config()` from a config file and applies `a.b.c=value` overrides, then validates.

  Args:
    name_or_path: a config file path or a bare config name (`cpu_tiny`, `diffdmx_rt`, ...).
    overrides: strings `section.field=value`; values are parsed as Python literals where possible.
  """
  path = resolve_config_path(name_or_path)
  spec = importlib.util.spec_from_file_location(f'_diffvox_config_{path.stem}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  apply_overrides(config, overrides)
  validate(config)
  return config


def apply_overrides(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> None:
  """Sets `a.b.c=value` fields in place; an unknown field is a `ConfigError`."""
  import ast

  for override in overrides:
    key, sep, raw = override.removeprefix('--config.').partition('=')
    if not sep:
      raise ConfigError(f'override {override!r} is not of the form field=value')
    try:
      value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      value = raw
    parent = config
    *path, leaf = key.split('.')
    for part in path:
      if part not in parent:
        raise ConfigError(f'unknown config field {key!r}')
      parent = parent[part]
    if leaf not in parent:
      raise ConfigError(f'unknown config field {key!r}')
    current = parent[leaf]
    if isinstance(current, tuple) and isinstance(value, list):
      value = tuple(value)
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
      value = float(value)
    parent[leaf] = value


def total_downsampling(config: ml_collections.ConfigDict) -> int:
  """What every audio length must be a multiple of: prod(factors) for the U-Nets, the STFT hop for the spectral
  kinds."""
  if config.model.get('kind', 'waveform') != 'waveform':
    return int(config.model.spectral.hop)
  return math.prod(config.model.factors)


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks the invariants the code relies on; raises `ConfigError` naming the field."""
  model, gen, cond = config.model, config.model.generator, config.model.conditioner
  kind = model.get('kind', 'waveform')
  levels = len(model.factors)
  if levels == 0 or any(int(f) < 1 for f in model.factors):
    raise ConfigError(f'model.factors must be positive integers, got {model.factors}')
  for name, values in (('model.generator.blocks', gen.blocks), ('model.generator.attention', gen.attention),
                       ('model.generator.inject', gen.inject), ('model.conditioner.attention', cond.attention)):
    if len(values) != levels:
      raise ConfigError(f'{name} has {len(values)} entries but model.factors has {levels} levels')
  if len(cond.kernel_sizes) != 3:
    raise ConfigError(f'model.conditioner.kernel_sizes needs 3 kernels (one per conv), got {cond.kernel_sizes}')
  check_audio_length(config, 'data.segment', config.data.segment)
  check_audio_length(config, 'sampler.chunk', config.sampler.chunk)
  if model.dtype not in DTYPES:
    raise ConfigError(f'model.dtype={model.dtype!r} is not one of {DTYPES}')
  if model.attention_impl not in ATTENTION_IMPLS:
    raise ConfigError(f'model.attention_impl={model.attention_impl!r} is not one of {ATTENTION_IMPLS}')
  for name, channels, groups in (('generator', gen.channels, gen.groups), ('conditioner', cond.channels, cond.groups)):
    if channels % groups:
      raise ConfigError(f'model.{name}.channels={channels} is not divisible by model.{name}.groups={groups}')
  if cond.transformer_layers and cond.transformer_dim % cond.transformer_heads:
    raise ConfigError('model.conditioner.transformer_dim must be divisible by transformer_heads')
  if kind not in MODEL_KINDS:
    raise ConfigError(f'model.kind={kind!r} is not one of {MODEL_KINDS}')
  if kind == 'waveform':
    validate_model_details(model)
  else:
    validate_spectral(model.spectral)
  if kind == 'mask' and model.spectral.freeze_conditioner:
    raise ConfigError('model.spectral.freeze_conditioner with model.kind=mask would train nothing (the mask model '
                      'is all conditioner)')
  sampler = config.sampler
  if sampler.steps < 0 or (kind == 'mask' and sampler.steps):
    raise ConfigError(f'sampler.steps={sampler.steps} must be at least 0 (and 0 for model.kind=mask, which has no '
                      'generator)')
  if config.diffusion.get('loss_weighting', 'uniform') not in LOSS_WEIGHTINGS:
    raise ConfigError(f'diffusion.loss_weighting={config.diffusion.loss_weighting!r} is not one of '
                      f'{LOSS_WEIGHTINGS}')
  if config.diffusion.get('reconstruction_loss', 'mse') not in diffusion.RECONSTRUCTION_LOSSES:
    raise ConfigError(f'diffusion.reconstruction_loss={config.diffusion.reconstruction_loss!r} is not one of '
                      f'{diffusion.RECONSTRUCTION_LOSSES}')
  try:  # the sampler's own checks (steps, method, schedule, eta, cut-off, sigma_start, target, data_scale, ...)
    sampler_lib.SamplerSettings.from_config(config)
  except ValueError as error:
    field = str(error).split('=', 1)[0]
    raise ConfigError(f'{SETTINGS_FIELDS.get(field, "sampler." + field)}={str(error).split("=", 1)[1]}') from None
  if not 0.0 <= sampler.overlap < 1.0:
    raise ConfigError(f'sampler.overlap={sampler.overlap} must lie in [0, 1)')
  if sampler.num_samples < 1 or sampler.batch_size < 1:
    raise ConfigError('sampler.num_samples and sampler.batch_size must be at least 1')
  if config.train.batch_size < 1 or config.train.steps_per_dispatch < 1:
    raise ConfigError('train.batch_size and train.steps_per_dispatch must be at least 1')
  if config.train.get('stop_poll_every', 1) < 1:
    raise ConfigError(f'train.stop_poll_every={config.train.stop_poll_every} must be at least 1')
  accumulation = config.train.get('accumulation_steps', 1)
  if accumulation < 1 or config.train.batch_size % accumulation:
    raise ConfigError(f'train.accumulation_steps={accumulation} must be at least 1 and divide train.batch_size='
                      f'{config.train.batch_size}')
  if not 0.0 <= config.train.ema_decay < 1.0:
    raise ConfigError(f'train.ema_decay={config.train.ema_decay} must lie in [0, 1)')
  if not 0.0 <= config.data.silent_keep_prob <= 1.0:
    raise ConfigError(f'data.silent_keep_prob={config.data.silent_keep_prob} must lie in [0, 1]')
  return config


def check_audio_length(config: ml_collections.ConfigDict, name: str, length: int) -> None:
  """Raises ConfigError (naming `name`) unless `length` samples is a positive multiple of the model's total
  down-sampling, the lengths its networks take."""
  hop = total_downsampling(config)
  if length <= 0 or length % hop:
    raise ConfigError(f'{name}={length} is not a positive multiple of the total down-sampling {hop}')


def level_heads(network: ml_collections.ConfigDict, levels: int) -> tuple[int, ...]:
  """Attention heads at each of `levels` levels of `model.generator` or `model.conditioner`:
  `attention_heads_per_level`, or `attention_heads` at every level where that is empty (or absent)."""
  per_level = tuple(network.get('attention_heads_per_level', ()))
  return per_level or (network.attention_heads,) * levels


def validate_model_details(model: ml_collections.ConfigDict) -> None:
  """Model fields beyond the level lists: sizes, per-level heads, the conditioner's compression and latent tap."""
  gen, cond = model.generator, model.conditioner
  remat = model.get('remat', '')
  if remat and not callable(getattr(jax.checkpoint_policies, remat, None)):
    raise ConfigError(f'model.remat={remat!r} is not a jax.checkpoint_policies name (or \'\' for none)')
  for name, network in (('generator', gen), ('conditioner', cond)):
    heads = level_heads(network, len(model.factors))
    if len(heads) != len(model.factors) or min(heads) < 1:
      raise ConfigError(f'model.{name}.attention_heads_per_level={tuple(network.attention_heads_per_level)} needs '
                        f'one positive head count per level ({len(model.factors)} levels), or () for attention_heads')
  if model.attention_block < 1:
    raise ConfigError(f'model.attention_block={model.attention_block} must be at least 1')
  if gen.fourier_features < 2 or gen.fourier_features % 2:
    raise ConfigError(f'model.generator.fourier_features={gen.fourier_features} must be even (sin and cos pairs)')
  if gen.bottleneck_blocks < 0 or any(b < 0 for b in gen.blocks):
    raise ConfigError('model.generator.blocks and bottleneck_blocks must not be negative')
  if min(gen.kernel_size, *cond.kernel_sizes) < 1:
    raise ConfigError('model kernel sizes must be at least 1')
  if cond.compression < 1 or cond.channels % cond.compression or (cond.channels // cond.compression) % cond.groups:
    raise ConfigError(f'model.conditioner.compression={cond.compression} must divide channels={cond.channels} '
                      f'into a width divisible by groups={cond.groups}')
  if cond.latent_tap not in LATENT_TAPS:
    raise ConfigError(f'model.conditioner.latent_tap={cond.latent_tap!r} is not one of {LATENT_TAPS}')
  if cond.transformer_layers and (cond.transformer_dim // cond.transformer_heads) % 2:
    raise ConfigError('model.conditioner.transformer_dim / transformer_heads must be even (rotary embeddings)')


def validate_spectral(spectral: ml_collections.ConfigDict) -> None:
  """The spectral kinds' fields: STFT geometry and widths."""
  if spectral.hop < 1 or spectral.n_fft < spectral.hop or spectral.n_fft % spectral.hop:
    raise ConfigError(f'model.spectral.n_fft={spectral.n_fft} must be a positive multiple of hop={spectral.hop}')
  for name in ('hidden', 'generator_hidden'):
    if spectral[name] < 2 or spectral[name] % 2:
      raise ConfigError(f'model.spectral.{name}={spectral[name]} must be even (two LSTM directions)')
  if min(spectral.layers, spectral.generator_layers) < 1:
    raise ConfigError('model.spectral.layers and generator_layers must be at least 1')
  if spectral.fourier_features < 2 or spectral.fourier_features % 2:
    raise ConfigError(f'model.spectral.fourier_features={spectral.fourier_features} must be even')
  if not 0.0 <= spectral.get('dropout', 0.0) < 1.0:
    raise ConfigError(f'model.spectral.dropout={spectral.dropout} must be in [0, 1)')
  if spectral.freeze_conditioner and not spectral.conditioner_from:
    raise ConfigError('model.spectral.freeze_conditioner needs model.spectral.conditioner_from (a trained model '
                      'to freeze)')


def with_sampler_overrides(config: ml_collections.ConfigDict, overrides: dict[str, Any],
                            refining: bool = False) -> ml_collections.ConfigDict:
  """`config` with `config.sampler` updated from `overrides` ({field: value}), validated. Starting from noise
  (`start` 'noise', given or the config's) without a `sigma_start` means sigma_start 1, unless `refining` an
  estimate passed in (`diffvox separate --refine`), which sets `start` to 'noise'."""
  for field, value in overrides.items():
    if field not in config.sampler:
      raise ConfigError(f'unknown sampler setting {field!r} (known: {", ".join(sorted(config.sampler))})')
    config.sampler[field] = value
  if refining:
    config.sampler.start = 'noise'
  elif config.sampler.get('start', 'noise') == 'noise' and 'sigma_start' not in overrides:
    config.sampler.sigma_start = 1.0
  return validate(config)


def to_json(config: ml_collections.ConfigDict) -> str:
  return config.to_json(indent=2, sort_keys=True)


def from_json(text: str) -> ml_collections.ConfigDict:
  """Rebuilds a config saved by `to_json` (lists become tuples, as in the config files). Fields added to
  `configs/base.py` since it was saved take their base values, which keep the behaviour it was saved with."""

  def tuples(value):
    if isinstance(value, list):
      return tuple(tuples(v) for v in value)
    if isinstance(value, dict):
      return {k: tuples(v) for k, v in value.items()}
    return value

  def with_missing(saved: dict, defaults: dict) -> dict:
    merged = dict(saved)
    for key, value in defaults.items():
      if key not in merged:
        merged[key] = value
      elif isinstance(value, dict) and isinstance(merged[key], dict):
        merged[key] = with_missing(merged[key], value)
    return merged

  saved = tuples(json.loads(text))
  return validate(ml_collections.ConfigDict(with_missing(saved, load_config('base').to_dict())))
