"""Files that appear whole or not at all: atomic writes, their hidden temp names, JSON and JSON lines.

Every writer of the package writes to a hidden temp file beside its destination (`.NAME.<12 hex>.tmp`) and renames
it over the destination when complete, so a failure or a kill never leaves a partial file nor touches an existing
one; `remove_stale_temps` clears what a killed process left (`audio.AudioWriter` calls it on opening).

Run folders may live on cloud storage (`gs://bucket/run`): `as_path` keeps such URIs intact (pathlib would make
`gs:/bucket/run` of them) and the writers here take them through etils `epath`, as orbax does. Object stores have
no append and no atomic rename: a JSON line is appended by rewriting the object, and a finished object appears
whole, which is what the temp-and-rename protects locally.
"""

import json
import os
import pathlib
import re
import uuid
from typing import Any

from etils import epath


def is_cloud(path: str | os.PathLike) -> bool:
  """Whether `path` is a URI such as `gs://bucket/run` rather than a local path."""
  return '://' in os.fspath(path)


def as_path(path: str | os.PathLike) -> epath.Path:
  """A run folder or file as an `epath.Path`: cloud URIs as they are, local paths with `~` expanded, absolute."""
  if is_cloud(path):
    return epath.Path(os.fspath(path))
  return epath.Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


def hidden_temp(path: pathlib.Path | epath.Path, suffix: str = '') -> pathlib.Path | epath.Path:
  """A fresh hidden temp name beside `path`: `.NAME.<12 hex><suffix>.tmp`."""
  return path.with_name(f'.{path.name}.{uuid.uuid4().hex[:12]}{suffix}.tmp')


def remove_stale_temps(path: pathlib.Path | epath.Path) -> None:
  """Removes the hidden temp files of `path` (`hidden_temp` names) that a killed writer left behind."""
  pattern = re.compile(rf'\.{re.escape(path.name)}\.[0-9a-f]{{12}}(\.\w+)?\.tmp')
  if path.parent.is_dir():
    for leftover in path.parent.iterdir():
      if pattern.fullmatch(leftover.name):
        leftover.unlink(missing_ok=True)


def write_atomically(path: str | os.PathLike, data: bytes) -> None:
  """Writes `data` to a hidden temp file beside `path` and renames it over `path` (mode 0644)."""
  path = as_path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  temp = hidden_temp(path)
  try:
    temp.write_bytes(data)
    if not is_cloud(path):
      os.chmod(temp, 0o644)
    temp.replace(path)
  finally:
    if temp.exists():
      temp.unlink()


def write_json(path: str | os.PathLike, data: Any) -> None:
  """Writes `data` as indented JSON atomically (NaN/inf are not allowed: store None instead)."""
  write_atomically(path, (json.dumps(data, indent=2, allow_nan=False) + '\n').encode())


def read_json(path: str | os.PathLike) -> Any:
  """Reads a JSON file; a damaged file is an error naming it."""
  path = as_path(path)
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as error:
    raise ValueError(f'{path}: not valid JSON ({error})') from None


def append_json_line(path: str | os.PathLike, record: dict) -> None:
  """Appends `record` as one line of JSON to `path` (created if missing) and flushes it to the disk; on cloud
  storage, which has no append, the object is rewritten whole."""
  line = json.dumps(record, allow_nan=False) + '\n'
  if is_cloud(path):
    path = as_path(path)
    write_atomically(path, (path.read_text(encoding='utf-8') if path.exists() else '').encode() + line.encode())
    return
  with open(path, 'a', encoding='utf-8') as handle:
    handle.write(line)
    handle.flush()
    os.fsync(handle.fileno())


def read_json_lines(path: str | os.PathLike) -> list[dict]:
  """The records of a JSON-lines file. A last line cut short (a writer killed mid-line) is left out; a damaged
  line before it is an error naming the file and line."""
  path = as_path(path)
  lines = path.read_text(encoding='utf-8').split('\n')
  records = []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError as error:
      if number == len(lines):  # no newline after it: still being written, or cut by a kill.
        break
      raise ValueError(f'{path}:{number}: not valid JSON ({error})') from None
  return records
