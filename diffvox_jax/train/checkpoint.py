"""The training workdir's orbax checkpoints: save and restore the train state with exact resume.

Layout of a workdir:

    config.json                     the resolved config (`config.to_json`), written atomically
    checkpoints/<step>/             one orbax checkpoint per saved step, each holding the items
        params/ ema_params/             parameter trees (orbax PyTree items: sharding-aware, multi-host)
        optimizer/                      {'step', 'opt_state'} of the `TrainState`
        data_iterator/process_<i>-of-<n>.json   every process's input-pipeline iterator state
    tensorboard/                    scalars (see `loop.py`)

`config.json` is written and read by `diffvox_jax.inference` (`save_config`, `read_config`), which also loads a
workdir's parameters for inference and exports them.
"""

import base64
import dataclasses
import json
import os

import jax
import orbax.checkpoint as ocp
from etils import epath

from diffvox_jax import files
from diffvox_jax.inference import CHECKPOINT_DIR, CheckpointError
from diffvox_jax.train.state import TrainState

STATE_ITEMS = ('params', 'ema_params', 'optimizer')
ITERATOR_ITEM = 'data_iterator'


def encode_iterator_state(state: bytes | dict | list) -> str:
  """JSON text for an iterator state: grain's `DataLoaderIterator` gives bytes, a `DatasetIterator` a dict."""
  if isinstance(state, bytes):
    return json.dumps({'kind': 'bytes', 'value': base64.b64encode(state).decode('ascii')})
  return json.dumps({'kind': 'json', 'value': state})


def decode_iterator_state(text: str) -> bytes | dict | list:
  """Inverse of `encode_iterator_state`."""
  record = json.loads(text)
  return base64.b64decode(record['value']) if record['kind'] == 'bytes' else record['value']


class IteratorStateHandler(ocp.CheckpointHandler):
  """Saves each process's iterator state (already encoded text) as `process_<i>-of-<n>.json`."""

  @staticmethod
  def _filename(directory: epath.Path) -> epath.Path:
    return directory / f'process_{jax.process_index()}-of-{jax.process_count()}.json'

  def save(self, directory: epath.Path, args: 'IteratorStateSave') -> None:
    self._filename(directory).write_text(args.state)

  def restore(self, directory: epath.Path, args: 'IteratorStateRestore | None' = None) -> str:
    del args
    path = self._filename(directory)
    if not path.exists():
      written = sorted(p.name for p in directory.iterdir())
      raise CheckpointError(f'{path}: missing; the checkpoint holds {written}, written by a different number of '
                            f'processes than this run ({jax.process_count()})')
    return path.read_text()


@ocp.args.register_with_handler(IteratorStateHandler, for_save=True)
@dataclasses.dataclass
class IteratorStateSave(ocp.args.CheckpointArgs):
  state: str


@ocp.args.register_with_handler(IteratorStateHandler, for_restore=True)
@dataclasses.dataclass
class IteratorStateRestore(ocp.args.CheckpointArgs):
  pass


def make_manager(workdir: str | os.PathLike, keep: int | None = None, create: bool = True) -> ocp.CheckpointManager:
  """The orbax manager of `workdir/checkpoints`, keeping the `keep` newest checkpoints (all if None).

  Saves are asynchronous (training continues while the arrays are written); the caller decides when to save.
  """
  handlers = {name: ocp.StandardCheckpointHandler() for name in STATE_ITEMS}
  handlers[ITERATOR_ITEM] = IteratorStateHandler()
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create)
  return ocp.CheckpointManager(files.as_path(workdir) / CHECKPOINT_DIR, options=options,
                               item_handlers=handlers)


def _state_items(state: TrainState, make_args) -> dict[str, ocp.args.CheckpointArgs]:
  """The checkpoint items of a `TrainState`, each wrapped by `make_args` (StandardSave / StandardRestore)."""
  optimizer = {'step': state.step, 'opt_state': state.opt_state}
  return {'params': make_args(state.params), 'ema_params': make_args(state.ema_params),
          'optimizer': make_args(optimizer)}


def save_checkpoint(manager: ocp.CheckpointManager, state: TrainState, iterator_state: bytes | dict | list) -> int:
  """Starts saving `state` and the data iterator state (captured now) at step `state.step`; returns the step."""
  step = int(jax.device_get(state.step))
  items = _state_items(state, ocp.args.StandardSave)
  items[ITERATOR_ITEM] = IteratorStateSave(encode_iterator_state(iterator_state))
  manager.save(step, args=ocp.args.Composite(**items), force=True)
  return step


def restore_checkpoint(manager: ocp.CheckpointManager,
                       target: TrainState) -> tuple[TrainState, bytes | dict | list] | None:
  """Restores the latest checkpoint into `target`'s structure, shapes and shardings (`target` may hold arrays or
  `jax.ShapeDtypeStruct`s with shardings, see `parallel.abstract_sharded_state`).

  Returns `(state, iterator_state)`, or None when the manager holds no checkpoint.
  """
  step = manager.latest_step()
  if step is None:
    return None
  items = _state_items(target, ocp.args.StandardRestore)
  restored = manager.restore(step, args=ocp.args.Composite(**items, **{ITERATOR_ITEM: IteratorStateRestore()}))
  state = TrainState(step=restored['optimizer']['step'], params=restored['params'],
                     ema_params=restored['ema_params'], opt_state=restored['optimizer']['opt_state'])
  return state, decode_iterator_state(restored[ITERATOR_ITEM])
