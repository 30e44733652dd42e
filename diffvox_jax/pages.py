"""Listening pages: one self-contained HTML file beside a demo, a separation or an evaluation.

A page is plain HTML5 and CSS with one small inline script (no framework, nothing fetched from the network): audio
players and figures are relative links to files beside the page, so it works opened straight from the file system
and keeps working when the folder is moved or copied. The script does two things: tables of class `sortable`
sort by a column when its header is clicked (the order lives in the URL fragment, `#sort-<column>-<asc|desc>`, so a
sorted view can be linked), and once the page has loaded, `<body>` gets `data-images-loaded` and
`data-images-broken` (counts of figures that decoded or did not), which the tests read in headless Chromium.

Building blocks return HTML strings (every text is escaped); `write_page` assembles and writes them atomically.
"""

import html
import os
import pathlib
import urllib.parse
from collections.abc import Sequence

from diffvox_jax import files, results

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 1em 0; } th, td { padding: 0.3em 0.8em; border-bottom: 1px solid #eee; }
th { text-align: left; background: #f6f6f6; } td.number { text-align: right; font-variant-numeric: tabular-nums; }
table.sortable th { cursor: pointer; } table.sortable th:hover { background: #e8e8e8; }
.players { display: grid; grid-template-columns: repeat(auto-fill, minmax(250px, 1fr)); gap: 0.8em; }
.player { background: #f8f8f8; padding: 0.5em; border-radius: 4px; } .player audio { width: 100%; }
img { max-width: 100%; height: auto; display: block; margin: 1em 0; }
pre { background: #f4f4f4; padding: 0.8em; overflow-x: auto; }
"""

SCRIPT = """
function sortFromHash() {
  var match = /^#sort-(\\d+)-(asc|desc)$/.exec(location.hash);
  if (!match) return;
  var column = +match[1], sign = match[2] === 'asc' ? 1 : -1;
  document.querySelectorAll('table.sortable tbody').forEach(function (body) {
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[column].dataset.value || a.cells[column].textContent;
      var y = b.cells[column].dataset.value || b.cells[column].textContent;
      var nx = parseFloat(x), ny = parseFloat(y);
      var order = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y) : nx - ny;
      return sign * order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  });
}
document.querySelectorAll('table.sortable th').forEach(function (header, column) {
  header.addEventListener('click', function () {
    var ascending = location.hash === '#sort-' + column + '-asc';
    location.hash = '#sort-' + column + (ascending ? '-desc' : '-asc');
  });
});
window.addEventListener('hashchange', sortFromHash);
window.addEventListener('load', function () {
  var images = Array.prototype.slice.call(document.images);
  var loaded = images.filter(function (image) { return image.complete && image.naturalWidth > 0; }).length;
  document.body.dataset.imagesLoaded = loaded;
  document.body.dataset.imagesBroken = images.length - loaded;
  sortFromHash();
});
"""


def link(path: str | os.PathLike, page_dir: str | os.PathLike) -> str:
  """`path` relative to the page's folder, with forward slashes and URL-escaped characters (for src/href)."""
  relative = pathlib.PurePath(os.path.relpath(os.path.abspath(path), os.path.abspath(page_dir))).as_posix()
  return html.escape(urllib.parse.quote(relative), quote=True)


def players(items: Sequence[tuple[str, pathlib.Path]], page_dir: pathlib.Path) -> str:
  """A grid of labelled audio players, `(label, audio file)` each."""
  cells = [f'<div class="player"><div>{html.escape(label)}</div>'
           f'<audio controls preload="metadata" src="{link(path, page_dir)}"></audio></div>' for label, path in items]
  return '<div class="players">' + ''.join(cells) + '</div>'


def figure(path: pathlib.Path, page_dir: pathlib.Path, alt: str) -> str:
  """An image (a PNG written beside the page) with its alternative text."""
  return f'<img src="{link(path, page_dir)}" alt="{html.escape(alt, quote=True)}">'


def _cell(value) -> str:
  if isinstance(value, float):
    return f'<td class="number" data-value="{value!r}">{"–" if value != value else f"{value:.2f}"}</td>'
  return f'<td>{html.escape(str(value))}</td>'


def table(headers: Sequence[str], rows: Sequence[Sequence], sortable: bool = False) -> str:
  """A table; float cells are shown to 2 decimals (NaN as a dash) and sort by their exact value."""
  head = ''.join(f'<th>{html.escape(header)}</th>' for header in headers)
  body = ''.join('<tr>' + ''.join(_cell(value) for value in row) + '</tr>' for row in rows)
  kind = ' class="sortable"' if sortable else ''
  return f'<table{kind}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def code(lines: Sequence[str]) -> str:
  """Shell commands, one per line."""
  return '<pre>' + html.escape('\n'.join(lines)) + '</pre>'


def heading(text: str, level: int = 2) -> str:
  return f'<h{level}>{html.escape(text)}</h{level}>'


def paragraph(text: str) -> str:
  return f'<p>{html.escape(text)}</p>'


def write_page(path: str | os.PathLike, title: str, parts: Sequence[str]) -> pathlib.Path:
  """Writes the page `path` (atomically): `title` as its title and first heading, then `parts` in order."""
  document = ('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
              '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
              f'<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n'
              f'{heading(title, 1)}\n' + '\n'.join(parts) + f'\n<script>{SCRIPT}</script>\n</body>\n</html>\n')
  path = pathlib.Path(path)
  files.write_atomically(path, document.encode())
  return path


def settings_text(settings) -> str:
  """A sampler's settings in words (a `sampler.SamplerSettings`): what the figure titles and pages name."""
  if not settings.steps:
    return 'one pass (direct estimate)'
  return (f'{settings.method} T={settings.steps}, eta {settings.eta:g}, noise cut-off {settings.cutoff_hz:g} Hz, '
          f'{settings.num_samples} sample(s)')


def separation_page(out: pathlib.Path, separated: Sequence[tuple[pathlib.Path, str, dict[str, pathlib.Path]]],
                    model: str, settings) -> pathlib.Path:
  """`out/index.html` for `diffvox separate --html`: per input (path, track name, `{stem: written file}`), players
  of the input and its stems and their spectrograms (`out/index_files/<n>.png`, at the input's own rate)."""
  from diffvox_jax import audio, plots  # matplotlib only when a page is asked for

  description = f'{model}, {settings_text(settings)}'
  parts = [paragraph(f'{len(separated)} file(s) separated with {description}. Audio is linked, not copied: '
                     'keep the inputs where they are for their players to work.')]
  for index, (path, track, stems) in enumerate(separated):
    mixture, rate = audio.read_audio(path)
    panels = [('input', mixture)] + [(stem, audio.read_audio(file)[0]) for stem, file in stems.items()]
    image = plots.plot_spectrograms(panels, rate, out / 'index_files' / f'{index:03d}.png',
                                    title=f'{track}: {description}')
    parts += [heading(track), players([('input', path)] + list(stems.items()), out),
              figure(image, out, f'spectrograms of {track}')]
  return write_page(out / 'index.html', f'diffvox separate: {model}', parts)


def evaluation_page(out_dir: pathlib.Path, summary: dict, examples: Sequence) -> pathlib.Path:
  """`out_dir/index.html` for `diffvox evaluate`: the summary table, a sortable per-track table of every system's
  uSDR (and the model's SDR, SIR, SAR) and players for `examples` (`evaluate.Example`: best, median, worst)."""
  systems = summary['systems']
  def number(value: float | None) -> float:
    return float('nan') if value is None else value

  headline = [[system['label'], system['runs']] + [number(system['metrics'][metric][statistic]) for metric, statistic
                                                   in (('usdr', 'median_runs_mean'), ('usdr', 'mean'),
                                                       ('SDR', 'median'), ('SIR', 'median'), ('SAR', 'median'))]
              for system in systems.values()]
  values = {name: results.per_track(system, summary['tracks']) for name, system in systems.items()}
  rows = [[track] + [values[name][track]['usdr'] for name in systems]
          + [values['model'][track][metric] for metric in ('SDR', 'SIR', 'SAR')] for track in summary['tracks']]
  model = systems['model']
  parts = [paragraph(f'{summary["dataset"]} / {summary["split"]}: {len(summary["tracks"])} tracks, '
                     f'{model["label"]} ({model["settings"].get("checkpoint") or "model"}), '
                     f'{model["runs"]} run(s). All values in dB, vocals; higher is better.'),
           heading('Summary'),
           table(['system', 'runs', 'uSDR (median over tracks, mean over runs)', 'uSDR mean', 'SDR median',
                  'SIR median', 'SAR median'], headline),
           paragraph(results.STATISTICS),
           heading('Per track (click a column to sort)'),
           table(['track'] + [f'{system["label"]} uSDR' for system in systems.values()]
                 + [f'{model["label"]} {metric}' for metric in ('SDR', 'SIR', 'SAR')], rows, sortable=True)]
  for example in examples:
    parts += [heading(f'{example.label}: {example.track} ({example.usdr:.2f} dB uSDR)'),
              players([('mixture', example.mixture), ('estimated vocals', example.estimate),
                       ('true vocals', example.vocals)], out_dir),
              figure(example.figure, out_dir, f'spectrograms of {example.track}')]
  return write_page(out_dir / 'index.html', f'diffvox evaluate: {model["label"]} on {summary["dataset"]}', parts)
