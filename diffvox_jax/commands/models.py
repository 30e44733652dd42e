"""`diffvox models`: list the models shipped in the package, the default first.

    diffvox models
    diffvox separate song.mp3 -n diffdmx_spectral_16k

One row per model: its name (what `diffvox separate -n NAME` and `Separator.from_pretrained(NAME)` take), its
kind, sample rate and channels, the size of its weights, and the title of its model card (`MODEL_CARD.md` beside
the weights says how it was trained and what it scores).
"""

import json
import pathlib

from diffvox_jax import inference
from diffvox_jax.commands import common


def define_flags() -> None:
  pass


def describe(folder: pathlib.Path) -> dict:
  """What `diffvox models` shows of one packaged model folder."""
  config = json.loads((folder / 'config.json').read_text())
  card = folder / 'MODEL_CARD.md'
  title = card.read_text().splitlines()[0].partition(': ')[2] if card.is_file() else ''
  weights = folder / 'params.msgpack'
  return {'name': folder.name, 'kind': config['model'].get('kind', 'waveform'),
          'rate': config['data']['sample_rate'], 'channels': config['data']['channels'],
          'megabytes': weights.stat().st_size / 2**20 if weights.is_file() else 0.0, 'title': title}


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    common.fail(f'unexpected arguments: {" ".join(argv[1:])}')
  default = inference.default_checkpoint().name
  names = sorted(inference.packaged_models(), key=lambda name: (name != default, name))
  print(f'  {"name":<24} {"kind":<9} {"rate":>6} {"ch":>2} {"MB":>5}  model card')
  for name in names:
    row = describe(inference.resolve_checkpoint(name))
    mark = '*' if name == default else ' '
    print(f'{mark} {row["name"]:<24} {row["kind"]:<9} {row["rate"]:>6} {row["channels"]:>2} '
          f'{row["megabytes"]:>5.1f}  {row["title"]}')
  print('(* the default; diffvox separate -n NAME picks another)')
