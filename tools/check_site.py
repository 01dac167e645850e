"""Check a built documentation site: `python tools/check_site.py site [--shots DIR]`.

1. From the HTML files themselves: every page's article has text, every relative `href` and
   `src` points at a file of the site, every `#anchor` at an element id of its page, and every
   image is a PNG, GIF, JPEG or SVG file.
2. In a browser, where the Debian `chromium` package (or Chrome) is installed: each page is
   opened headless (`chromium --headless --screenshot`) and its screenshot must show the
   page's article, not a flat colour (a blank page). Without a browser this part is skipped,
   saying so.

Exit 1 if anything fails, naming each page and what is wrong.
"""
import argparse
import html.parser
import pathlib
import shutil
import subprocess
import sys
import tempfile
import urllib.parse

IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"\xff\xd8\xff")
SKIPPED_PAGES = {"404.html"}
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


class PageParser(html.parser.HTMLParser):
    """The ids, links and image sources of one HTML page, and the text of its article."""

    def __init__(self):
        super().__init__()
        self.ids, self.links, self.images = set(), [], []
        self.text, self._article_depth = [], 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag == "img" and attrs.get("src"):
            self.images.append(attrs["src"])
        if tag == "article" or self._article_depth:
            self._article_depth += 1

    def handle_endtag(self, tag):
        if self._article_depth:
            self._article_depth -= 1

    def handle_data(self, data):
        if self._article_depth:
            self.text.append(data)


def parse(path):
    parser = PageParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def pages(site):
    return sorted(p for p in site.rglob("*.html")
                  if p.name not in SKIPPED_PAGES and "search" not in p.relative_to(site).parts)


def local_target(page, reference):
    """(file, anchor) that a relative reference of `page` points at; None for other sites."""
    parts = urllib.parse.urlsplit(reference)
    if parts.scheme or parts.netloc or reference.startswith(("mailto:", "javascript:")):
        return None
    target = page if not parts.path else (page.parent / urllib.parse.unquote(parts.path))
    if target.is_dir():
        target = target / "index.html"
    return target.resolve(), urllib.parse.unquote(parts.fragment)


def check_links(site):
    """Problems of the site's pages, links and images, as `page: what` strings."""
    site = pathlib.Path(site).resolve()
    problems, parsed = [], {}
    for page in pages(site):
        parsed[page.resolve()] = parse(page)
    for page, info in parsed.items():
        name = page.relative_to(site)
        if len("".join(info.text).split()) < 5:
            problems.append(f"{name}: blank page (its article has no text)")
        for reference in info.links:
            target = local_target(page, reference)
            if target is None:
                continue
            file, anchor = target
            if not file.is_file():
                problems.append(f"{name}: broken link {reference!r} (no {file.relative_to(site) if file.is_relative_to(site) else file})")
            elif anchor and file.suffix == ".html":
                ids = parsed[file].ids if file in parsed else parse(file).ids
                if anchor not in ids:
                    problems.append(f"{name}: broken link {reference!r} (no id {anchor!r} there)")
        for source in info.images:
            target = local_target(page, source)
            if target is None:
                problems.append(f"{name}: image {source!r} is not part of the site")
                continue
            file = target[0]
            if not file.is_file():
                problems.append(f"{name}: missing image {source!r}")
            elif file.suffix != ".svg" and not file.read_bytes()[:8].startswith(IMAGE_SIGNATURES):
                problems.append(f"{name}: {source!r} is not a PNG, GIF or JPEG file")
    return problems


def find_browser():
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def browser_command(browser, *arguments):
    return [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--no-first-run", "--disable-dev-shm-usage", "--allow-file-access-from-files",
            *arguments]


def blank(png):
    """Whether a screenshot's article column (below the header, between the navigation
    sidebars of the 1280-pixel-wide layout) is one flat colour: a page that shows nothing."""
    import matplotlib.image  # a dependency of funcdl; only needed here

    pixels = matplotlib.image.imread(png)
    article = pixels[80:, 290:990]
    return bool(article.size == 0 or (article == article[0, 0]).all())


def check_in_browser(site, browser, shots, timeout=60):
    """Open each page headless and take a screenshot, which must show the page's article.
    Returns (problems, {page: screenshot bytes})."""
    site = pathlib.Path(site).resolve()
    problems, sizes = [], {}
    for page in pages(site):
        name = str(page.relative_to(site))
        shot = pathlib.Path(shots) / (name.replace("/", "__")[:-5] + ".png")
        run = subprocess.run(browser_command(browser, "--window-size=1280,1600",
                                             "--virtual-time-budget=3000",
                                             f"--screenshot={shot}", page.as_uri()),
                             capture_output=True, text=True, timeout=timeout)
        if run.returncode != 0 or not shot.is_file():
            problems.append(f"{name}: no screenshot (exit {run.returncode}: {run.stderr[-300:]})")
        elif blank(shot):
            problems.append(f"{name}: blank page in the browser (its screenshot shows nothing)")
        else:
            sizes[name] = shot.stat().st_size
    return problems, sizes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", help="the built site's folder (mkdocs build's site_dir)")
    parser.add_argument("--shots", help="where the screenshots go (default: a temporary folder)")
    options = parser.parse_args(argv)
    site = pathlib.Path(options.site)
    if not (site / "index.html").is_file():
        print(f"check_site: {site} has no index.html (run `make docs` first)", file=sys.stderr)
        return 1
    problems = check_links(site)
    count = len(pages(site))
    print(f"links and images: {count} pages checked, {len(problems)} problems")
    browser = find_browser()
    if browser is None:
        print("browser check skipped: chromium is not installed "
              "(Debian: apt-get install chromium)")
    else:
        with tempfile.TemporaryDirectory() as scratch:
            shots = options.shots or scratch
            pathlib.Path(shots).mkdir(parents=True, exist_ok=True)
            found, sizes = check_in_browser(site, browser, shots)
            problems += found
            if sizes:
                print(f"browser ({browser}): {len(sizes)} pages rendered; screenshots "
                      f"{min(sizes.values()):,} to {max(sizes.values()):,} bytes")
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
