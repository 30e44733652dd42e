"""The listening-page builder: escaping, relative links that survive odd file names, the sortable table in a real
browser (headless Chromium), and the page checks themselves on a page with a broken link."""

import re

import matplotlib
import numpy as np
import pytest
import soundfile as sf

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
from page_checks import check_page, links, render  # noqa: E402

from diffvox_jax import pages  # noqa: E402


def _assets(folder):
  """An audio file and a figure with awkward names (space, '#', '%', non-ASCII) in a subfolder."""
  (folder / 'my files').mkdir(parents=True)
  audio = folder / 'my files' / 'sång #1 100%.wav'
  sf.write(audio, np.sin(np.arange(8000) / 5.0).astype(np.float32) * 0.3, 8000)
  image = folder / 'my files' / 'figure #1.png'
  figure, axis = plt.subplots()
  axis.plot([0, 1], [1, 0])
  figure.savefig(image)
  plt.close(figure)
  return audio, image


def test_a_page_with_players_a_figure_and_a_sortable_table_renders_and_sorts(tmp_path):
  audio, image = _assets(tmp_path)
  rows = [['b <i>', 2.0, 'x'], ['a', 10.0, 'y'], ['c', float('nan'), 'z'], ['d', -1.5, 'w']]
  page = pages.write_page(tmp_path / 'index.html', 'A & B <test>', [
      pages.paragraph('5 < 6 & "quoted"'), pages.players([('mixture', audio), ('vocals', audio)], tmp_path),
      pages.figure(image, tmp_path, 'a "figure"'), pages.table(['name', 'uSDR (dB)', 'tag'], rows, sortable=True),
      pages.code(['diffvox separate "my song.mp3"'])])
  text = page.read_text()
  assert '<title>A &amp; B &lt;test&gt;</title>' in text and 'b &lt;i&gt;' in text and '<i>' not in text
  assert '5 &lt; 6 &amp; &quot;quoted&quot;' in text and '<td class="number" data-value="nan">–</td>' in text
  assert [path for _, path in links(page)] == [audio, audio, image]
  dom = check_page(page, tmp_path / 'shot.png', players=2, images=1)
  assert _first_column(dom) == ['b &lt;i&gt;', 'a', 'c', 'd']  # as written until a header is clicked
  ascending = _first_column(render(page, 'sort-1-asc'))
  assert ascending[:3] == ['d', 'b &lt;i&gt;', 'a']  # numeric order, not text order (10 after 2)
  assert _first_column(render(page, 'sort-0-desc')) == ['d', 'c', 'b &lt;i&gt;', 'a']


def _first_column(dom: str) -> list[str]:
  return re.findall(r'<tr><td>([^<]*)</td>', dom)


def test_the_checks_catch_a_broken_link_and_invalid_html(tmp_path):
  audio, image = _assets(tmp_path)
  page = pages.write_page(tmp_path / 'index.html', 'broken', [pages.players([('gone', tmp_path / 'gone.wav')],
                                                                          tmp_path)])
  with pytest.raises(AssertionError, match='broken links'):
    check_page(page, tmp_path / 'shot.png', players=1, images=0)
  page.write_text(page.read_text().replace('</table>', '').replace('<body>', '<body><p><div></span>'))
  with pytest.raises(Exception, match='(?i)unexpected|end tag'):
    check_page(page, tmp_path / 'shot.png', players=1, images=0)
  broken_image = pages.write_page(tmp_path / 'image.html', 'image', [pages.figure(audio, tmp_path, 'not a png')])
  with pytest.raises(AssertionError, match='data-images'):
    check_page(broken_image, tmp_path / 'shot.png', players=0, images=1)
