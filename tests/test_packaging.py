"""Packaging that tells the truth: the jax/jaxlib/numpy lower bounds are the versions the floor
run installs, the declared licence has its file, the package ships `py.typed`, and the
README's first command writes no tracked file."""
import pathlib
import re
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def lower_bounds():
    bounds = {}
    for requirement in PYPROJECT["project"]["dependencies"]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", requirement)
        assert match, f"every dependency has one lower bound: {requirement!r}"
        bounds[match.group(1).lower()] = match.group(2)
    return bounds


def pins(path):
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            found[name.strip().lower()] = version.strip()
    return found


def normalised(version):
    parts = [int(part) for part in version.split(".")]
    while parts and parts[-1] == 0:
        parts.pop()
    return parts


def test_floor_constraints_pin_the_lower_bounds():
    bounds, floor = lower_bounds(), pins(ROOT / "constraints" / "floor.txt")
    assert set(floor) == {"jax", "jaxlib", "numpy"}
    for name, version in floor.items():
        assert normalised(version) == normalised(bounds[name]), (name, version, bounds[name])


def test_jax_floor_has_the_public_enable_x64_and_compiles_hessians_right():
    """jax.enable_x64 (used for every float64 path) is public from jax 0.8.0 on; jaxlib 0.8.0
    and 0.8.1 compile a wrong jitted Hessian of a small CNN (test_small_cnn_hvp_and_hessian),
    fixed in 0.8.2, which needs Python >= 3.11 and numpy >= 2.0."""
    bounds = lower_bounds()
    assert normalised(bounds["jax"]) >= [0, 8, 2]
    assert normalised(bounds["jaxlib"]) == normalised(bounds["jax"])
    assert normalised(bounds["numpy"]) >= [2]
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"


def test_the_floor_run_is_the_fast_tests_on_the_oldest_python_and_pins():
    """`make test-floor` installs constraints/floor.txt into a venv made by FLOOR_PYTHON,
    which defaults to, and is checked to be, the oldest Python that requires-python allows."""
    oldest = re.fullmatch(r">=(\d+)\.(\d+)", PYPROJECT["project"]["requires-python"]).groups()
    text = (ROOT / "Makefile").read_text()
    default = re.search(r"^FLOOR_PYTHON \?= python(\d+)\.(\d+)$", text, re.M)
    assert default, "the Makefile sets FLOOR_PYTHON ?= pythonX.Y"
    assert default.groups() == oldest
    recipe = make_recipe("test-floor")
    assert f"sys.version_info[:2] != ({oldest[0]}, {oldest[1]})" in recipe
    assert "$(FLOOR_PYTHON) -m venv $(FLOOR)" in recipe
    assert "-c constraints/floor.txt" in recipe
    assert '-m "not slow"' in recipe


def test_licence_file_matches_the_declared_licence():
    assert PYPROJECT["project"]["license"] == "MIT"
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")
    assert "the funcdl authors" in text
    assert "LICENSE" in PYPROJECT["project"]["license-files"]


def test_py_typed_is_shipped():
    assert (ROOT / "funcdl" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["funcdl"]


def test_docs_extra_lists_the_site_builders():
    names = {re.split(r"[<>=]", requirement)[0] for requirement in
             PYPROJECT["project"]["optional-dependencies"]["docs"]}
    assert {"mkdocs", "mkdocs-material", "mkdocstrings-python"} <= names


def make_recipe(target):
    text = (ROOT / "Makefile").read_text()
    match = re.search(rf"^{re.escape(target)}:[^\n]*\n((?:\t[^\n]*\n)+)", text, re.M)
    assert match, f"the Makefile has a `{target}` target"
    return match.group(1)


def test_make_demo_writes_no_tracked_file():
    """`make demo` leaves docs/ alone (funcdl demo's default folder, runs/demo/, is ignored);
    `make gallery` is the target that refreshes the committed pictures."""
    demo = make_recipe("demo")
    assert "funcdl demo" in demo and "--out" not in demo
    assert "runs/" in (ROOT / ".gitignore").read_text().split()
    assert "--out docs/gallery" in make_recipe("gallery")


def test_ci_runs_the_tests_the_slow_tests_checks_the_docs_site_then_runs_the_floor():
    steps = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
             if line.strip().startswith("make ")]
    assert steps == ["make test", "make test-slow", "make docs-check", "make test-floor"]
    assert '-m "not slow"' in make_recipe("test") and "-m slow" in make_recipe("test-slow")
    assert "mkdocs build --strict" in make_recipe("docs")
    assert "tools/check_site.py" in make_recipe("docs-check")


def test_the_test_extra_can_build_the_docs():
    """tests/test_docs_site.py builds the site: `make test` installs what it needs."""
    test = {re.split(r"[<>=]", r)[0] for r in PYPROJECT["project"]["optional-dependencies"]["test"]}
    docs = {re.split(r"[<>=]", r)[0] for r in PYPROJECT["project"]["optional-dependencies"]["docs"]}
    assert docs <= test
