"""The examples on the command line: `funcdl list`, `funcdl run NAME`, `funcdl demo`.

`funcdl.cli` parses the arguments and calls the `run_*` functions here, each
`run_<name>(options) -> exit code`. Every argument, the pictures' folder included, is checked
before any training starts; a usage mistake goes to `options.parser.error` (one line, exit 2).
Layering: this module sits on `funcdl.examples`, which never imports it or `funcdl.cli`.
"""
import argparse
import os
import pathlib
import sys
import time

import jax

OPTIMIZERS = ("sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw")  # fdl.optim's names


def enable_compilation_cache():
    """Turn on JAX's persistent compilation cache in the user's cache folder; return the folder.

    `$FUNCDL_CACHE_DIR`, else `$XDG_CACHE_HOME/funcdl/jax`, else `~/.cache/funcdl/jax`. JAX skips
    compilations faster than 1 s and entries below a minimum size by default, i.e. every lesson
    here, so both thresholds are set to 0. Only the command does this, never `import funcdl`.
    """
    folder = os.environ.get("FUNCDL_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "funcdl", "jax")
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder


def run_list(options):
    """One line per example: its name, the seed it reproduces, what it shows."""
    from funcdl import examples

    for name in examples.NAMES:
        module = examples.load(name)
        print(f"{name:<15} seed {module.SEED}  {module.SHOWS}")
    return 0


def folder_problem(path):
    """Why `path` cannot be (made) a writable folder, or None if it can.

    The first part of `path` that exists must be a folder that this process may write into.
    Nothing is created: `run` and `demo` call this before training, the examples make the folder.

    Examples:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> folder_problem(folder / "runs" / "xor") is None
        True
        >>> (folder / "picture.png").write_text("")
        0
        >>> folder_problem(folder / "picture.png").endswith("exists and is not a folder")
        True
    """
    path = pathlib.Path(path)
    if path.exists() and not path.is_dir():
        return f"{str(path)!r} exists and is not a folder"
    existing = path
    while not existing.exists():  # ends at the current folder or the root, which exist
        existing = existing.parent
    if not existing.is_dir():
        return f"{str(existing)!r} is a file, so {str(path)!r} cannot be a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{str(existing)!r} is not writable"
    return None


def _check_out(parser, out):
    problem = folder_problem(out)
    if problem:
        parser.error(f"argument --out: the pictures' folder {problem}")


def run_run(options):
    """Run one example: print its results, write its pictures to --out (default runs/NAME/).

    A quick run says what it checked (that training ran and its loss fell, ...), never that it
    reproduced the seed's numbers: only the full run compares with the seed.
    """
    from funcdl import examples

    module = examples.load(options.name)
    overrides = {option: getattr(options, option)
                 for option in ("epochs", "lr", "optimizer", "backend", "model")
                 if getattr(options, option) is not None}
    refused = [f"--{option}" for option in overrides if option not in module.OPTIONS]
    if refused:
        takes = ", ".join(f"--{option}" for option in module.OPTIONS) or "no options"
        options.parser.error(f"{options.name} does not take {', '.join(refused)} (it takes {takes})")
    out = options.out or os.path.join("runs", options.name)
    _check_out(options.parser, out)
    if not options.no_cache:
        enable_compilation_cache()
    start = time.perf_counter()
    try:
        results = module.run(quick=options.quick, out_dir=out, **overrides)
    except FloatingPointError as diverged:  # fit's NaN guard: a learning rate too large
        print(f"funcdl run {options.name}: {str(diverged).splitlines()[0]} (a smaller --lr?)",
              file=sys.stderr)
        return 1
    seconds = time.perf_counter() - start
    reference, got, passed = module.verdict(results)
    if options.quick:
        print(f"\n{options.name}, quick run: checks {reference}\nfuncdl got: {got} "
              f"[{'ok' if passed else 'MISS'}] in {seconds:.1f} s\n(`funcdl run {options.name}` "
              "without --quick compares with the seed)")
    else:
        print(f"\n{options.name}: the seed reports {reference}\nfuncdl got: {got} "
              f"[{'pass' if passed else 'MISS'}] in {seconds:.1f} s")
    for picture in results["pictures"]:
        print(f"wrote {picture}")
    return 0


def run_demo(options):
    """Run every example twice (cold: compiling; warm: again), then print the table.

    The pictures go to --out (default runs/demo/). Exit 1 if any example misses its target.
    """
    from funcdl import examples

    out = options.out or os.path.join("runs", "demo")  # the pictures' names are distinct
    _check_out(options.parser, out)
    if not options.no_cache:
        print(f"compilation cache: {enable_compilation_cache()}")
    rows = []
    for name in examples.NAMES:
        module = examples.load(name)
        seconds = []
        for _ in ("cold", "warm"):
            start = time.perf_counter()
            results = module.run(out_dir=out)
            seconds.append(time.perf_counter() - start)
        rows.append((name, *module.verdict(results), *seconds))
    print("\n" + format_demo_table(rows))
    missed = [row[0] for row in rows if not row[3]]
    total = sum(row[4] + row[5] for row in rows)
    print(f"\n{len(rows)} examples in {total:.0f} s: "
          + ("all reproduced" if not missed else "MISSED: " + ", ".join(missed)))
    print(f"the pictures are in {out}")
    return 1 if missed else 0


def format_demo_table(rows):
    """A Markdown table of `(example, seed reports, funcdl got, passed, cold s, warm s)` rows."""
    lines = ["| example | the seed reports | funcdl got | pass | cold s | warm s |",
             "|---|---|---|---|---|---|"]
    for name, seed_reports, got, passed, cold, warm in rows:
        lines.append(f"| {name} | {seed_reports} | {got} | {'pass' if passed else 'FAIL'} "
                     f"| {cold:.1f} | {warm:.1f} |")
    return "\n".join(lines)


def example_name(name):
    """`name` if it is an example's, else argparse's error naming the examples (for `type=`)."""
    from funcdl import examples

    if name not in examples.NAMES:
        raise argparse.ArgumentTypeError(
            f"unknown example {name!r} (choose from {', '.join(examples.NAMES)})")
    return name
