"""Checks of a listening page as a person would open it: valid HTML5, every link resolving to a file beside it,
every audio file decodable, and rendered in headless Chromium (Debian's `chromium`, which `make test` installs)
with every figure loaded and a screenshot taken."""

import html.parser
import pathlib
import shutil
import subprocess
import urllib.parse

import html5lib
import matplotlib.image
import numpy as np
import soundfile as sf

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
CHROMIUM_FLAGS = ('--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars', '--virtual-time-budget=5000')


class _Links(html.parser.HTMLParser):
  def __init__(self):
    super().__init__()
    self.links: list[tuple[str, str]] = []  # (tag, target)

  def handle_starttag(self, tag, attrs):
    for name, value in attrs:
      if name in ('src', 'href') and value:
        self.links.append((tag, value))


def links(page: pathlib.Path) -> list[tuple[str, pathlib.Path]]:
  """`(tag, file)` for every src/href of the page (fragments of the page itself excluded)."""
  parser = _Links()
  parser.feed(page.read_text())
  return [(tag, page.parent / urllib.parse.unquote(target)) for tag, target in parser.links
          if not target.startswith('#')]


def render(page: pathlib.Path, fragment: str = '', screenshot: pathlib.Path | None = None) -> str:
  """The page's DOM after its scripts ran (`file://` URL, optional `#fragment`); with `screenshot`, also a
  1200 x 1600 PNG of it."""
  assert CHROMIUM, 'chromium is not installed (make test installs it: apt-get install chromium)'
  url = page.resolve().as_uri() + (f'#{fragment}' if fragment else '')
  dom = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, '--dump-dom', url], capture_output=True, text=True, timeout=120,
                       check=True).stdout
  if screenshot is not None:
    subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, '--window-size=1200,1600', f'--screenshot={screenshot}', url],
                   capture_output=True, timeout=120, check=True)
  return dom


def check_page(page: pathlib.Path, screenshot: pathlib.Path, players: int, images: int) -> str:
  """Asserts everything the module docstring lists; `players` and `images` are the counts the page must have.
  Returns the rendered DOM."""
  text = page.read_text()
  html5lib.HTMLParser(strict=True).parse(text)  # raises on any HTML5 parse error
  found = links(page)
  missing = [str(path) for _, path in found if not path.is_file()]
  assert not missing, f'{page}: broken links {missing}'
  audio = [path for tag, path in found if tag == 'audio']
  assert len(audio) == players and sum(tag == 'img' for tag, _ in found) == images, found
  for path in audio:
    assert sf.info(str(path)).frames > 0, path
  dom = render(page, screenshot=screenshot)
  assert f'data-images-loaded="{images}"' in dom and 'data-images-broken="0"' in dom, dom[:2000]
  shot = matplotlib.image.imread(screenshot)
  assert shot.shape[:2] == (1600, 1200) and float(np.std(shot[..., :3])) > 0.02  # not a blank page
  return dom
