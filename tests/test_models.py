"""The Diff-DMX network: shapes, the condition/denoise contract, gradients, attention, RoPE, bf16, parameter counts.

Runtime is dominated by XLA compilation, so the numeric network tests use a 3-level miniature of cpu_tiny (same
block types, a factor-1 level, attention, injection and a 1-layer transformer) and compile without backend
optimisation. Paper-size models are only ever traced with `jax.eval_shape`.
"""

import functools
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffvox_jax.config import ConfigError, load_config
from diffvox_jax.models import Conditioning, build_model, parameter_counts
from diffvox_jax.models.attention import (
  blockwise_attention,
  multi_head_attention,
  resolve_implementation,
  rotary_embedding,
)
from diffvox_jax.models.generator import level_widths

fast_jit = functools.partial(jax.jit, compiler_options={'xla_backend_optimization_level': 0})

MINI_OVERRIDES = (
    'model.factors=(2, 1, 2)',
    'model.generator.blocks=(1, 1, 1)',
    'model.generator.attention=(False, False, True)',
    'model.generator.inject=(False, True, True)',
    'model.generator.channels=4',
    'model.generator.groups=2',
    'model.generator.attention_heads=2',
    'model.generator.attention_head_dim=4',
    'model.generator.fourier_features=8',
    'model.generator.modulation_features=16',
    'model.conditioner.attention=(False, False, True)',
    'model.conditioner.channels=8',
    'model.conditioner.groups=2',
    'model.conditioner.attention_heads=2',
    'model.conditioner.attention_head_dim=4',
    'model.conditioner.transformer_layers=1',
    'model.conditioner.transformer_dim=16',
    'model.conditioner.transformer_heads=2',
)
HOP = 4  # prod of the miniature's factors.
LENGTH = 8 * HOP


def mini_config(*extra: str):
  return load_config('cpu_tiny', MINI_OVERRIDES + extra)


def random_params(model, seed: int = 0):
  """Parameters with the model's shapes, drawn with numpy (compiling flax's initialisers is slow on CPU).

  Weights ~ N(0, 1 / fan_in); GroupNorm/LayerNorm scales 1 + 0.1 N(0, 1); every other vector 0.1 N(0, 1).
  """
  audio = jax.ShapeDtypeStruct((1, HOP, 2), jnp.float32)
  shapes = jax.eval_shape(model.init, jax.random.key(0), audio, jax.ShapeDtypeStruct((1,), jnp.float32), audio)
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    if len(leaf.shape) > 1:
      return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(math.prod(leaf.shape[:-1])), jnp.float32)
    offset = 1.0 if jax.tree_util.keystr(path).endswith("['scale']") else 0.0
    return jnp.asarray(offset + 0.1 * rng.normal(size=leaf.shape), jnp.float32)

  return {'params': jax.tree_util.tree_map_with_path(draw, shapes['params'])}, set(shapes)


def example_inputs(time: int, batch: int = 2, seed: int = 0):
  rng = np.random.default_rng(seed)
  x_sigma = jnp.asarray(rng.normal(size=(batch, time, 2)), jnp.float32)
  mixture = jnp.asarray(rng.normal(scale=0.3, size=(batch, time, 2)), jnp.float32)
  sigma = jnp.asarray(rng.uniform(size=(batch,)), jnp.float32)
  return x_sigma, sigma, mixture


@pytest.fixture(scope='module')
def mini():
  """(config, model, variables, variable collections) of the miniature float32 model."""
  config = mini_config()
  model = build_model(config)
  variables, collections = random_params(model)
  return config, model, variables, collections


@pytest.fixture(scope='module')
def mini_outputs(mini):
  """Everything the contract tests compare, from one compiled function (compilation dominates the runtime).

  The batch holds (x, sigma, c), (x, 1 - sigma, c) and (x, sigma, -2c), so that the dependence on sigma and on the
  mixture shows within one call.
  """
  _, model, variables, _ = mini
  x_sigma, sigma, mixture = example_inputs(LENGTH, batch=1, seed=3)
  x_sigma = jnp.concatenate([x_sigma] * 3)
  sigma = jnp.concatenate([sigma, 1.0 - sigma, sigma])
  mixture = jnp.concatenate([mixture, mixture, -2.0 * mixture])

  def loss(params):
    v_hat, conditioning = model.apply({'params': params}, x_sigma, sigma, mixture)
    value = (jnp.mean(v_hat ** 2) + jnp.mean(conditioning.latent_estimate ** 2)
             + jnp.mean(conditioning.reconstruction_estimate ** 2))
    return value, (v_hat, conditioning)

  def run(variables):
    grads, (v_hat, conditioning) = jax.grad(loss, has_aux=True)(variables['params'])
    split_conditioning, state = model.apply(
        variables, mixture, method='condition', capture_intermediates=lambda module, _: module.name == 'conditioner')
    v_split = model.apply(variables, x_sigma, sigma, split_conditioning.features, method='denoise')
    latent = state['intermediates']['conditioner']['__call__'][0].latent
    return dict(v_hat=v_hat, conditioning=conditioning, grads=grads, v_split=v_split,
                split_conditioning=split_conditioning, latent=latent)

  return fast_jit(run)(variables)


def check_shapes(config, v_hat, conditioning, batch, time):
  widths = level_widths(config.model.conditioner.channels, config.model.factors)
  assert isinstance(conditioning, Conditioning)
  assert v_hat.shape == (batch, time, 2) and v_hat.dtype == jnp.float32
  # Both auxiliary heads give full-length stereo.
  assert conditioning.latent_estimate.shape == (batch, time, 2)
  assert conditioning.reconstruction_estimate.shape == (batch, time, 2)
  for level, feature in enumerate(conditioning.features):
    if config.model.generator.inject[level]:
      assert feature.shape == (batch, time // math.prod(config.model.factors[:level]), widths[level])
    else:
      assert feature is None


def test_output_shapes_for_several_lengths(mini, mini_outputs):
  config = mini[0]
  check_shapes(config, mini_outputs['v_hat'], mini_outputs['conditioning'], 3, LENGTH)
  assert np.all(np.isfinite(mini_outputs['v_hat']))
  # The paper's 7-level layout at cpu_tiny widths, traced only (shapes, no compilation).
  config = load_config('cpu_tiny')
  model = build_model(config)
  params = jax.eval_shape(model.init, jax.random.key(0), *example_inputs(128, batch=1))
  for time in (128, 384):
    v_hat, conditioning = jax.eval_shape(model.apply, params, *example_inputs(time, batch=2))
    check_shapes(config, v_hat, conditioning, 2, time)


def test_length_not_a_multiple_of_the_down_sampling_is_refused(mini):
  _, model, variables, _ = mini
  x_sigma, sigma, mixture = example_inputs(3 * HOP + 3)
  with pytest.raises(ValueError, match='not a positive multiple of the total down-sampling 4'):
    jax.eval_shape(model.apply, variables, x_sigma, sigma, mixture)
  with pytest.raises(ValueError, match='multiple of the total down-sampling'):
    jax.eval_shape(functools.partial(model.apply, method='condition'), variables, mixture)
  good = example_inputs(LENGTH)
  features = jax.eval_shape(functools.partial(model.apply, method='condition'), variables, good[2]).features
  with pytest.raises(ValueError, match='multiple of the total down-sampling'):
    jax.eval_shape(functools.partial(model.apply, method='denoise'), variables, x_sigma, sigma, features)
  paper_model = build_model(load_config('cpu_tiny'))
  audio = jax.ShapeDtypeStruct((1, 1000, 2), jnp.float32)
  with pytest.raises(ValueError, match='total down-sampling 128'):
    jax.eval_shape(paper_model.init, jax.random.key(0), audio, jax.ShapeDtypeStruct((1,), jnp.float32), audio)


def test_condition_once_then_denoise_equals_the_combined_call(mini_outputs):
  combined, split = mini_outputs['conditioning'], mini_outputs['split_conditioning']
  np.testing.assert_allclose(mini_outputs['v_split'], mini_outputs['v_hat'], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(split.latent_estimate, combined.latent_estimate, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(split.reconstruction_estimate, combined.reconstruction_estimate, rtol=1e-5, atol=1e-6)


def test_output_depends_on_sigma_and_on_the_mixture(mini_outputs):
  v_hat = np.asarray(mini_outputs['v_hat'])
  assert np.abs(v_hat[0] - v_hat[1]).max() > 1e-3  # other sigma
  assert np.abs(v_hat[0] - v_hat[2]).max() > 1e-3  # other mixture


def test_latent_head_unfolds_each_bottleneck_step_into_hop_samples(mini, mini_outputs):
  _, _, variables, _ = mini
  latent = np.asarray(mini_outputs['latent'])  # (batch, steps, bottleneck channels)
  head = variables['params']['latent_head']
  per_step = latent @ np.asarray(head['kernel']) + np.asarray(head['bias'])  # (batch, steps, hop * 2)
  expected = per_step.reshape(latent.shape[0], latent.shape[1] * HOP, 2)
  np.testing.assert_allclose(mini_outputs['conditioning'].latent_estimate, expected, rtol=1e-4, atol=1e-5)


def test_gradients_are_finite_and_reach_every_part(mini_outputs):
  grads = mini_outputs['grads']
  for path, leaf in jax.tree_util.tree_leaves_with_path(grads):
    assert np.all(np.isfinite(leaf)), jax.tree_util.keystr(path)
  for part in ('generator', 'conditioner', 'latent_head', 'reconstruction_head'):
    assert global_norm(grads[part]) > 0, part
  assert global_norm(grads['conditioner']['transformer']) > 0
  assert global_norm(grads['generator']['sigma_embedding']) > 0


def global_norm(tree) -> float:
  return float(np.sqrt(sum(np.sum(np.square(leaf)) for leaf in jax.tree_util.tree_leaves(tree))))


def test_bfloat16_compute_keeps_float32_parameters(mini, mini_outputs):
  _, _, variables, _ = mini
  model16 = build_model(mini_config('model.dtype="bfloat16"'))
  x_sigma, sigma, mixture = example_inputs(LENGTH, batch=1, seed=3)
  params16 = jax.eval_shape(model16.init, jax.random.key(0), x_sigma, sigma, mixture)['params']
  assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(params16)} == {jnp.dtype(jnp.float32)}
  v16, conditioning16 = fast_jit(model16.apply)(variables, x_sigma, sigma, mixture)
  assert v16.dtype == jnp.float32 and conditioning16.latent_estimate.dtype == jnp.float32
  assert {f.dtype for f in conditioning16.features if f is not None} == {jnp.dtype(jnp.bfloat16)}
  v32 = np.asarray(mini_outputs['v_hat'][:1])
  relative_error = np.linalg.norm(np.asarray(v16) - v32) / np.linalg.norm(v32)
  assert relative_error < 0.1


def reference_attention(query, key, value):
  """softmax(q k^T / sqrt(d)) v in float64 numpy; inputs `(batch, tokens, heads, head_dim)`."""
  scores = np.einsum('bqhd,bkhd->bhqk', query, key) / np.sqrt(query.shape[-1])
  weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
  weights /= weights.sum(axis=-1, keepdims=True)
  return np.einsum('bhqk,bkhd->bqhd', weights, value)


@pytest.mark.parametrize('query_tokens,key_tokens,block', [(37, 37, 8), (16, 16, 16), (12, 29, 5)])
def test_blockwise_attention_equals_plain_attention(query_tokens, key_tokens, block):
  rng = np.random.default_rng(query_tokens + key_tokens)
  query = 2.0 * rng.normal(size=(2, query_tokens, 3, 6))
  key = 2.0 * rng.normal(size=(2, key_tokens, 3, 6))
  value = rng.normal(size=(2, key_tokens, 3, 6))
  expected = reference_attention(query, key, value)
  with jax.enable_x64(True):
    blockwise = fast_jit(blockwise_attention, static_argnums=3)(jnp.asarray(query), jnp.asarray(key),
                                                                 jnp.asarray(value), block)
    assert blockwise.dtype == jnp.float64
    np.testing.assert_allclose(blockwise, expected, rtol=1e-10, atol=1e-12)
    if query_tokens == key_tokens:
      # jax.nn.dot_product_attention computes its softmax in float32 whatever the input dtype.
      plain = multi_head_attention(jnp.asarray(query), jnp.asarray(key), jnp.asarray(value), implementation='xla')
      np.testing.assert_allclose(plain, expected, rtol=1e-5, atol=1e-6)


def test_blockwise_attention_gradients_equal_plain_attention_gradients():
  rng = np.random.default_rng(7)
  arrays = [rng.normal(size=(1, 21, 2, 4)) for _ in range(4)]

  def plain_attention(query, key, value):
    weights = jax.nn.softmax(jnp.einsum('bqhd,bkhd->bhqk', query, key) / jnp.sqrt(query.shape[-1]), axis=-1)
    return jnp.einsum('bhqk,bkhd->bqhd', weights, value)

  with jax.enable_x64(True):
    q, k, v, weights = (jnp.asarray(a) for a in arrays)
    blockwise = fast_jit(jax.grad(lambda *qkv: jnp.sum(blockwise_attention(*qkv, block=4) * weights),
                                  argnums=(0, 1, 2)))(q, k, v)
    plain = jax.grad(lambda *qkv: jnp.sum(plain_attention(*qkv) * weights), argnums=(0, 1, 2))(q, k, v)
  for got, want in zip(blockwise, plain, strict=True):
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11)


def test_auto_attention_picks_blockwise_for_long_sequences_on_cpu():
  assert resolve_implementation('auto', 4096, 1024, jnp.float32) == 'blockwise'
  assert resolve_implementation('auto', 1024, 1024, jnp.float32) == 'xla'
  assert resolve_implementation('xla', 4096, 1024, jnp.float32) == 'xla'
  with pytest.raises(ValueError, match='flash'):
    resolve_implementation('flash', 16, 16, jnp.float32)


def test_auto_attention_per_backend():
  """TPU: XLA's plain attention at any length; GPU: cuDNN in half precision, else as on a CPU."""
  assert resolve_implementation('auto', 16384, 1024, jnp.float32, backend='tpu') == 'xla'
  assert resolve_implementation('auto', 16384, 1024, jnp.bfloat16, backend='tpu') == 'xla'
  assert resolve_implementation('auto', 4096, 1024, jnp.bfloat16, backend='gpu') == 'cudnn'
  assert resolve_implementation('auto', 4096, 1024, jnp.float32, backend='gpu') == 'blockwise'
  assert resolve_implementation('auto', 512, 1024, jnp.float32, backend='gpu') == 'xla'
  assert resolve_implementation('blockwise', 512, 1024, jnp.float32, backend='tpu') == 'blockwise'


def test_rotary_scores_depend_only_on_relative_position():
  rng = np.random.default_rng(11)
  query, key = rng.normal(size=(1, 1, 2, 8)), rng.normal(size=(1, 1, 2, 8))

  def score(query_position, key_position):
    with jax.enable_x64(True):
      q = rotary_embedding(jnp.asarray(query), jnp.asarray([query_position]))
      k = rotary_embedding(jnp.asarray(key), jnp.asarray([key_position]))
      return np.einsum('bqhd,bkhd->h', q, k)

  for shift in (1, 7, 300):
    np.testing.assert_allclose(score(5 + shift, 2 + shift), score(5, 2), rtol=1e-10, atol=1e-12)
  assert np.abs(score(5, 2) - score(5, 3)).max() > 1e-3  # it does depend on the offset ...
  rotated = rotary_embedding(jnp.asarray(query, jnp.float32), jnp.asarray([9]))
  np.testing.assert_allclose(np.linalg.norm(rotated, axis=-1), np.linalg.norm(query, axis=-1), rtol=1e-5)  # ... and
  # rotations keep norms.


def test_parameter_counts_land_within_five_percent_of_the_paper():
  rt = parameter_counts(load_config('diffdmx_rt'))
  assert rt['generator'] == pytest.approx(15.9e6, rel=0.05)
  assert rt['conditioner'] == pytest.approx(82.9e6, rel=0.05)
  assert rt['total'] == pytest.approx(99e6, rel=0.05)
  plain = parameter_counts(load_config('diffdmx_plain'))
  assert plain['total'] == pytest.approx(71e6, rel=0.05)
  assert plain['generator'] == rt['generator']
  assert plain['aux_heads'] == rt['aux_heads']


def test_the_literal_attention_reading_keeps_the_paper_parameter_counts():
  """configs/diffdmx_rt_literal.py: attention at the four deepest levels of both networks, narrow at D/8."""
  config = load_config('diffdmx_rt_literal')
  for network in (config.model.generator, config.model.conditioner):
    assert tuple(network.attention) == (False, False, False, True, True, True, True)
  literal, default = parameter_counts(config), parameter_counts(load_config('diffdmx_rt'))
  assert literal['generator'] == pytest.approx(15.9e6, rel=0.05)
  assert literal['conditioner'] == pytest.approx(82.9e6, rel=0.05)
  assert literal['generator'] > default['generator'] and literal['conditioner'] > default['conditioner']


def test_heads_per_level_change_only_the_attention_widths():
  """One head instead of cpu_tiny's two at both levels: only the generator's attention projections shrink."""
  fields = ('model.factors=(2, 2)', 'model.generator.blocks=(1, 1)', 'model.generator.attention=(True, True)',
            'model.generator.inject=(False, True)', 'model.conditioner.attention=(False, False)')
  uniform = parameter_counts(load_config('cpu_tiny', fields))
  narrow = parameter_counts(load_config('cpu_tiny', fields + ('model.generator.attention_heads_per_level=(1, 1)',)))
  assert narrow['conditioner'] == uniform['conditioner']
  assert narrow['generator'] < uniform['generator']
  with pytest.raises(ConfigError, match='attention_heads_per_level'):
    load_config('cpu_tiny', ('model.generator.attention_heads_per_level=(2, 2)',))  # cpu_tiny has 7 levels.


def test_paper_configs_train_on_all_100_musdb_training_tracks():
  for name in ('diffdmx_rt', 'diffdmx_rt_literal', 'diffdmx_plain'):
    assert load_config(name).data.train_split == 'train+validation'
  assert load_config('cpu_tiny').data.train_split == 'train'  # the base default, used by the small configs.


def test_parameter_counts_add_up_to_the_model_parameters(mini):
  config, _, variables, collections = mini
  counts = parameter_counts(config)
  actual = sum(leaf.size for leaf in jax.tree_util.tree_leaves(variables['params']))
  assert counts['total'] == actual == counts['generator'] + counts['conditioner'] + counts['aux_heads']
  assert collections == {'params'}  # `model.init` returns parameters only, no state.


@pytest.mark.parametrize('override,message', [
    ('model.conditioner.compression=3', 'compression'),
    ('model.conditioner.latent_tap="middle"', 'latent_tap'),
    ('model.generator.fourier_features=7', 'fourier_features'),
])
def test_bad_model_fields_are_refused(override, message):
  with pytest.raises(ConfigError, match=message):
    load_config('cpu_tiny', [override])


def test_model_summary_command_prints_the_total():
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  result = subprocess.run([sys.executable, '-m', 'diffvox_jax.cli', 'model-summary', '--config', 'cpu_tiny'],
                          capture_output=True, text=True, env=env, check=True, timeout=300)
  lines = result.stdout.strip().splitlines()
  counts = parameter_counts(load_config('cpu_tiny'))
  assert lines[-1] == f'total_params={counts["total"]}'
  for part in ('generator', 'conditioner', 'aux_heads'):
    assert any(line.split()[:2] == [part, f'{counts[part]:,}'] for line in lines), part
