"""Models for inference: finding them, `(config, params)` from a workdir or an export, the export, the binding.

A model is named by a packaged name (`diffvox_jax/pretrained/<name>/`), a training workdir or an exported folder
(`resolve_checkpoint`). A training workdir (see `train/checkpoint.py`) holds `config.json` and orbax checkpoints
under `checkpoints/`; an exported model is a folder with `config.json` and `params.msgpack`
(`flax.serialization`). Both load with `load_for_inference`; `export_for_inference` turns the first into the
second (what `diffvox_jax/pretrained/` ships). `network_for_config` binds a model to the sampler, once per config.
Nothing here needs the training package.
"""

import functools
import os
import pathlib
from typing import Any

import flax.serialization
import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

from diffvox_jax import config as config_lib
from diffvox_jax import files, sampler
from diffvox_jax.models import build_model, for_sampling

CONFIG_FILE = 'config.json'
CHECKPOINT_DIR = 'checkpoints'
PARAMS_FILE = 'params.msgpack'
PRETRAINED = pathlib.Path(__file__).resolve().parent / 'pretrained'
# The packaged model that a missing `--checkpoint` means (`tools/train_pretrained.py` makes it; its MODEL_CARD.md
# says how and what it reaches).
DEFAULT_MODEL = 'mask_baseline_16k'


class CheckpointError(ValueError):
  """A workdir or export folder that cannot be loaded; the message names the path."""


def packaged_models() -> list[str]:
  """Names of the models shipped in the package (`diffvox separate --model NAME` loads them)."""
  return sorted(p.name for p in PRETRAINED.iterdir() if (p / CONFIG_FILE).is_file()) if PRETRAINED.is_dir() else []


def resolve_checkpoint(name_or_path: str | None) -> pathlib.Path:
  """The default model for None; an existing path as is; else a packaged model of that name; else the path (whose
  loading then fails with a message naming it)."""
  if not name_or_path:
    return default_checkpoint()
  path = pathlib.Path(name_or_path).expanduser()
  if not path.exists() and name_or_path in packaged_models():
    return PRETRAINED / name_or_path
  return path


def default_checkpoint() -> pathlib.Path:
  """The default packaged model's folder; a `CheckpointError` when this installation lacks it."""
  folder = PRETRAINED / DEFAULT_MODEL
  if not (folder / CONFIG_FILE).is_file():
    raise CheckpointError(f'{folder}: the packaged pretrained model is missing from this installation: pass '
                          '--checkpoint (a training workdir or an exported model folder)')
  return folder


def save_config(folder: str | os.PathLike, config: ml_collections.ConfigDict) -> None:
  """Writes `folder/config.json` (the resolved config) atomically."""
  files.write_atomically(files.as_path(folder) / CONFIG_FILE, config_lib.to_json(config).encode())


def read_config(folder: str | os.PathLike) -> ml_collections.ConfigDict:
  """Reads and validates `folder/config.json`."""
  path = files.as_path(folder) / CONFIG_FILE
  if not path.is_file():
    raise CheckpointError(f'{path}: no such file (a workdir or exported model needs its config.json)')
  return config_lib.from_json(path.read_text())


def latest_step(workdir: str | os.PathLike) -> int | None:
  """The newest complete checkpoint step of a training workdir, or None."""
  folder = files.as_path(workdir) / CHECKPOINT_DIR
  if not folder.is_dir():
    return None
  manager = ocp.CheckpointManager(folder, options=ocp.CheckpointManagerOptions(create=False))
  try:
    return manager.latest_step()
  finally:
    manager.close()


def _restore_params(workdir: epath.Path, use_ema: bool) -> tuple[int, Any]:
  """`(step, params)` of the newest checkpoint of `workdir` as numpy arrays, whatever devices wrote it (only that
  item is read: the optimizer and data-iterator state are left alone)."""
  step = latest_step(workdir)
  if step is None:
    raise CheckpointError(f'{workdir}: neither an exported model ({PARAMS_FILE}) nor a workdir with a complete '
                          f'checkpoint in {CHECKPOINT_DIR}/')
  item = files.as_path(workdir) / CHECKPOINT_DIR / str(step) / ('ema_params' if use_ema else 'params')
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  handler = ocp.StandardCheckpointHandler()
  try:
    target = jax.tree.map(lambda array: jax.ShapeDtypeStruct(array.shape, array.dtype, sharding=device),
                          handler.metadata(item))
    restored = handler.restore(item, args=ocp.args.StandardRestore(target))
  finally:
    handler.close()
  return step, jax.device_get(restored)


def load_for_inference(path: str | os.PathLike, use_ema: bool = True) -> tuple[ml_collections.ConfigDict, Any]:
  """Loads `(config, params)` for `model.apply({'params': params}, ...)` from a training workdir (its newest
  checkpoint; the EMA parameters when `use_ema`) or from a folder written by `export_for_inference`.

  Params are nested dicts of numpy float32 arrays.
  """
  folder = files.as_path(path)
  config = read_config(folder)
  if (folder / PARAMS_FILE).is_file():
    return config, flax.serialization.msgpack_restore((folder / PARAMS_FILE).read_bytes())
  return config, _restore_params(folder, use_ema)[1]


def pretrained_conditioner(source: str) -> tuple[ml_collections.ConfigDict, Any]:
  """The config and conditioner parameters of the trained model `source` (a packaged name, a workdir or an export;
  its EMA weights): a 'mask' model's whole network or a 'spectral' model's conditioner."""
  source_config, params = load_for_inference(resolve_checkpoint(source))
  return source_config, params['conditioner']


@functools.lru_cache(maxsize=8)
def _network_for_config_json(config_json: str) -> sampler.Network:
  return sampler.model_network(for_sampling(build_model(config_lib.from_json(config_json))))


def network_for_config(config: ml_collections.ConfigDict) -> sampler.Network:
  """The model's `sampler.Network`, one per distinct config, so `compiled_sampler`'s cache is reused."""
  return _network_for_config_json(config_lib.to_json(config))


def export_params(out_dir: str | os.PathLike, config: ml_collections.ConfigDict, params: Any) -> None:
  """Writes an exported model folder: `out_dir/params.msgpack` and `out_dir/config.json`."""
  out = files.as_path(out_dir)
  files.write_atomically(out / PARAMS_FILE, flax.serialization.msgpack_serialize(params))
  save_config(out, config)


def export_for_inference(workdir: str | os.PathLike, out_dir: str | os.PathLike, use_ema: bool = True) -> int:
  """Writes `out_dir/config.json` and `out_dir/params.msgpack` from the newest checkpoint of `workdir`;
  returns the exported step."""
  folder = files.as_path(workdir)
  config = read_config(folder)
  step, params = _restore_params(folder, use_ema)
  export_params(out_dir, config, params)
  return step
