"""The documentation site builds in strict mode, documents every public name at its public
dotted path, shows every tutorial's pictures, has no broken link, and every Python block of
its pages runs as written.

The references are independent of the site's machinery: the names come from importing each
subpackage's `__all__`, the pictures from the tutorials' Markdown and the files on disk, the
links from parsing the built HTML."""
import contextlib
import html
import importlib
import importlib.util
import inspect
import io
import json
import pathlib
import re
import struct
import subprocess
import sys
import time

import jax
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
sys.path.insert(0, str(ROOT / "tools"))
import check_site  # noqa: E402  (tools/ is not a package)

SUBPACKAGES = ["nn", "ops", "autodiff", "losses", "optim", "train", "metrics", "checkpoint",
               "datasets", "gradcheck"]
BUILD_SECONDS = {}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    pytest.importorskip("mkdocs", reason="the docs extra is not installed: pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("site")
    start = time.perf_counter()
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                            str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    BUILD_SECONDS["build"] = time.perf_counter() - start
    assert build.returncode == 0, build.stderr[-4000:]
    return out


@pytest.mark.slow  # ~15 s: the slow tier (`make test-slow`, run by CI)
def test_the_strict_build_is_quick_enough_to_stay_a_fast_test(site):
    """Not marked slow: the strict build takes ~5-10 s (30 s is the line)."""
    assert BUILD_SECONDS["build"] < 60, BUILD_SECONDS


def page_text(path):
    return html.unescape(re.sub(r"<[^>]+>", " ", path.read_text(encoding="utf-8")))


def squash(text):
    return " ".join(text.replace("`", "").split())


def letters(text):
    """Only the letters and digits: Markdown's rendering of a docstring keeps those in order."""
    return re.sub(r"[^A-Za-z0-9]", "", text)


def entries(module_name):
    module = importlib.import_module(module_name)
    for name in module.__all__:
        yield name, getattr(module, name)


def kind(obj):
    if inspect.ismodule(obj):
        return "module"
    if inspect.isclass(obj):
        return "class"
    if callable(obj):
        return "function"
    return "attribute"


@pytest.mark.parametrize("subpackage", SUBPACKAGES)
def test_every_public_name_has_a_reference_entry_at_its_public_path(site, subpackage):
    """`#funcdl.train.fit` is the function (not the module file funcdl/train/fit.py), with
    its signature and the start of its docstring."""
    page = site / "api" / f"{subpackage}.html"
    source = page.read_text(encoding="utf-8")
    text = letters(page_text(page))
    missing, wrong = [], []
    for name, obj in entries(f"funcdl.{subpackage}"):
        public = f"funcdl.{subpackage}.{name}"
        at = source.find(f'id="{public}"')
        if at < 0:
            missing.append(public)
            continue
        heading = re.search(r'doc-symbol-heading doc-symbol-(\w+)', source[at:at + 3000])
        if heading is None or heading.group(1) != kind(obj):
            wrong.append((public, kind(obj), heading and heading.group(1)))
        doc = inspect.getdoc(obj) if kind(obj) != "attribute" else None
        if doc and not re.fullmatch(rf"{obj.__name__}\(.*\)", doc):  # not a NamedTuple's own
            start = letters(doc)[:40]
            if start not in text:
                wrong.append((public, "docstring not shown", start))
    assert not missing, f"no reference entry for {missing}"
    assert not wrong, wrong


def test_every_subpackage_has_its_page_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    for subpackage in SUBPACKAGES:
        assert f"fdl.{subpackage}: api/{subpackage}.md" in nav


def test_every_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert [p for p in pages if f": {p}\n" not in nav] == []


def tutorial_pictures(page):
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page.read_text())


def test_every_example_has_a_tutorial_with_its_pictures(site):
    examples = importlib.import_module("funcdl.examples").NAMES
    assert examples
    for name in examples:
        page = DOCS / "tutorials" / f"{name}.md"
        assert page.is_file(), f"no tutorial for the example {name}"
        built = (site / "tutorials" / f"{name}.html").read_text(encoding="utf-8")
        for picture in tutorial_pictures(page):
            assert (page.parent / picture).is_file(), (name, picture)
            assert f'src="{picture}"' in built, (name, picture)
    # the examples that draw pictures show them: every gallery picture is on a tutorial page
    shown = {pathlib.Path(p).name for page in (DOCS / "tutorials").glob("*.md")
             for p in tutorial_pictures(page)}
    assert {p.name for p in (DOCS / "gallery").iterdir()} <= shown


def png_size_and_dpi(data):
    """(width, height, dpi) from a PNG's IHDR and pHYs chunks (pHYs: pixels per metre)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    at = data.find(b"pHYs")
    if at < 0:
        return width, height, None
    x_per_metre, y_per_metre, unit = struct.unpack(">IIB", data[at + 4:at + 13])
    assert unit == 1 and x_per_metre == y_per_metre
    return width, height, x_per_metre * 0.0254


def test_the_committed_pictures_read_at_their_native_size():
    """At least 100 dpi; the relu_quadratic animation at least 800 pixels wide, 30 frames."""
    gallery = DOCS / "gallery"
    for png in gallery.glob("*.png"):
        width, height, dpi = png_size_and_dpi(png.read_bytes())
        assert dpi is not None and dpi >= 99.5, (png.name, dpi)
        assert width >= 600, (png.name, width)
    gif = (gallery / "relu_quadratic.gif").read_bytes()
    assert gif[:6] in (b"GIF87a", b"GIF89a")
    width, height = struct.unpack("<HH", gif[6:10])
    frames = gif.count(b"\x21\xf9\x04")  # one graphic control extension per frame
    assert width >= 800 and frames >= 30, (width, height, frames)


def test_no_broken_link_anchor_or_image(site):
    assert check_site.check_links(site) == []


def test_the_checker_finds_broken_links_missing_images_and_blank_pages(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "index.html").write_text(
        '<article><h1>A page</h1><p>with enough words to read</p><a href="sub/b.html#nope">x</a>'
        '<a href="gone.html">y</a><a href="https://example.org/">z</a><a href="#here">w</a>'
        '<img src="gone.png"><img src="fake.png"><span id="here"></span></article>')
    (tmp_path / "fake.png").write_text("not a picture")
    (tmp_path / "sub" / "b.html").write_text("<article></article>")
    problems = check_site.check_links(tmp_path)
    assert sorted(problems) == sorted([
        "index.html: broken link 'sub/b.html#nope' (no id 'nope' there)",
        "index.html: broken link 'gone.html' (no gone.html)",
        "index.html: missing image 'gone.png'",
        "index.html: 'fake.png' is not a PNG, GIF or JPEG file",
        "sub/b.html: blank page (its article has no text)",
    ])


def test_benchmark_tables_are_read_from_the_committed_json(site):
    text = page_text(site / "benchmarks.html")
    autodiff = json.loads((ROOT / "benchmarks" / "results" / "bench_autodiff.json").read_text())
    for row in autodiff["results"]:
        assert f"{row['implementation']} {row['median_ms']:.3f}" in squash(text)
    assert autodiff["date"][:10] in text
    train = json.loads((ROOT / "benchmarks" / "results" / "bench_train.json").read_text())
    assert f"{1000 * train['results']['mlp']['fit jax']['seconds']:.2f}" in text


# ---- every Python block of the docs runs as written ----------------------------------------
BLOCK = re.compile(r"(<!-- skip: [^\n]*-->\n)?```python\n(.*?)```", re.S)


def pages_with_blocks():
    """The docs' pages with Python blocks, less those whose blocks another test file runs
    (it names the page)."""
    others = " ".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py")
                      if p.name != pathlib.Path(__file__).name)
    return [str(p.relative_to(DOCS)) for p in sorted(DOCS.rglob("*.md"))
            if BLOCK.search(p.read_text()) and f'"{p.name}"' not in others]


def test_a_skipped_block_gives_its_reason():
    for page in DOCS.rglob("*.md"):
        for comment in re.findall(r"<!-- skip[^\n]*-->", page.read_text()):
            assert re.fullmatch(r"<!-- skip: \S.* -->", comment), (page, comment)


@pytest.mark.slow
@pytest.mark.parametrize("page", pages_with_blocks())
def test_every_python_block_runs_alone(page):
    """Each block in a namespace of its own, so each must have its own imports; under jax's
    default promotion rules, which a reader has (not the test suite's strict ones)."""
    path = DOCS / page
    blocks = BLOCK.findall(path.read_text())
    ran = 0
    for skip, code in blocks:
        if skip:
            continue
        with contextlib.redirect_stdout(io.StringIO()), jax.numpy_rank_promotion("allow"), \
                jax.numpy_dtype_promotion("standard"):
            exec(compile(code, str(path), "exec"), {"__name__": "__docs__"})
        ran += 1
    assert ran or all(skip for skip, _ in blocks)
