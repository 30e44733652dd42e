"""Plots of sweep results: a metric against one swept field, one line per setting of the other fields."""

import pathlib
from collections.abc import Sequence

import matplotlib
from matplotlib.figure import Figure


def _legend_label(point: dict) -> str:
  """`eta=0.4, cutoff_hz=5000` (leaf field names)."""
  return ', '.join(f'{name.rsplit(".", 1)[-1]}={value:g}' if isinstance(value, float) else
                   f'{name.rsplit(".", 1)[-1]}={value}' for name, value in point.items())


def _lines(rows: Sequence[dict], names: Sequence[str], x: str, y_key: str) -> dict[str, list[tuple[float, float]]]:
  """Groups rows by the fields other than `x`: `{label: [(x, y), ...] sorted by x}`; undefined y skipped."""
  lines: dict[str, list[tuple[float, float]]] = {}
  for row in rows:
    others = {name: row['point'][name] for name in names if name != x}
    value = row['result'].get(y_key)
    if value is not None:
      lines.setdefault(_legend_label(others) if others else y_key, []).append((float(row['point'][x]), float(value)))
  return {label: sorted(points) for label, points in lines.items()}


def _draw(axes, lines: dict[str, list[tuple[float, float]]], colors: dict[str, str]) -> None:
  for label, points in lines.items():
    xs, ys = zip(*points, strict=True)
    axes.plot(xs, ys, marker='o', label=label, color=colors[label])


def plot_sweep(rows: Sequence[dict], names: Sequence[str], x: str, path: str | pathlib.Path, *,
               y_key: str = 'usdr', baselines: dict | None = None, reference_rows: Sequence[dict] = (),
               reference_title: str = 'reference', title: str = 'this evaluation') -> None:
  """Writes a PNG of `y_key` against field `x`, one line per combination of the other fields.

  Args:
    rows: sweep rows `{'point': {field: value}, 'result': {y_key: value}}`.
    names: the swept fields.
    x: the field on the horizontal axis (numeric).
    path: the PNG to write (atomically).
    y_key: the result to plot (default the paper's uSDR: the median over tracks, mean over runs).
    baselines: `{label: {y_key: value}}` drawn as horizontal dashed lines.
    reference_rows: rows of the same form (e.g. the paper's numbers), drawn in a second panel with the same colours.
    reference_title: title of that panel.
    title: title of the first panel.
  """
  if x not in names:
    raise ValueError(f'cannot plot against {x!r}: not a swept field ({", ".join(names)})')
  ours = _lines(rows, names, x, y_key)
  reference = _lines(reference_rows, names, x, y_key)
  palette = matplotlib.rcParams['axes.prop_cycle'].by_key()['color']
  labels = list(dict.fromkeys(list(ours) + list(reference)))
  colors = {label: palette[i % len(palette)] for i, label in enumerate(labels)}
  panels = 2 if reference else 1
  figure = Figure(figsize=(6.5 * panels, 4.5))
  axes = figure.subplots(1, panels, squeeze=False)
  for axis, lines, panel_title in zip(axes[0], (ours, reference), (title, reference_title), strict=False):
    _draw(axis, lines, colors)
    axis.set_title(panel_title)
    axis.set_xticks(sorted({px for points in lines.values() for px, _ in points}))
    axis.set_xlabel(x)
    axis.set_ylabel(f'{y_key} (dB)')
    axis.grid(alpha=0.3)
  for label, values in (baselines or {}).items():
    if values.get(y_key) is not None:
      axes[0][0].axhline(values[y_key], linestyle='--', color='gray', linewidth=1)
      axes[0][0].annotate(label, (0.01, values[y_key]), xycoords=('axes fraction', 'data'), fontsize=8,
                          va='bottom', color='gray')
  handles, legend_labels = [], []
  for axis in axes[0]:
    for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
      if label not in legend_labels:
        handles.append(handle)
        legend_labels.append(label)
  figure.legend(handles, legend_labels, loc='lower center', ncol=min(4, max(1, len(legend_labels))), fontsize=8)
  figure.tight_layout(rect=(0, 0.08 + 0.03 * (len(legend_labels) // 4), 1, 1))
  path = pathlib.Path(path)
  temporary = path.with_name(f'.{path.name}.tmp.png')
  figure.savefig(temporary, dpi=120)
  temporary.replace(path)
