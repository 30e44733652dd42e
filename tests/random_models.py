"""Model folders with random parameters of a config's shapes, for tests (shapes from `eval_shape`: nothing
compiles)."""

import pathlib

import flax.serialization
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from diffvox_jax import files, inference
from diffvox_jax.models import build_model


def param_shapes(config: ml_collections.ConfigDict):
  """The model's parameter tree as `jax.ShapeDtypeStruct` leaves."""
  audio = jax.ShapeDtypeStruct((1, config.data.segment, config.data.channels), jnp.float32)
  return jax.eval_shape(build_model(config).init, jax.random.key(0), audio, jax.ShapeDtypeStruct((1,), jnp.float32),
                        audio)['params']


def write_random_checkpoint(folder: pathlib.Path, config: ml_collections.ConfigDict) -> pathlib.Path:
  """An exported model folder (`config.json` + `params.msgpack`) with N(0, 0.05) parameters; returns `folder`."""
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: rng.normal(0, 0.05, s.shape).astype(s.dtype), param_shapes(config))
  files.write_atomically(folder / inference.PARAMS_FILE, flax.serialization.msgpack_serialize(params))
  inference.save_config(folder, config)
  return folder
