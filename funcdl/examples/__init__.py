"""The seeds' lessons as runnable examples: `funcdl list`, `funcdl run NAME`, `funcdl demo`.

Each module here is one lesson, read top to bottom: build the model, initialise, prepare the
data, train, show. Each has
- `SEED` (which seed document it reproduces) and `SHOWS` (one line: what it shows),
- `OPTIONS`: the overrides it takes from the command line (`epochs`, `lr`, `optimizer`, `backend`),
- `run(quick=False, out_dir=..., **overrides) -> dict`: trains, prints, writes its pictures to
  `out_dir` and returns its results (numbers and the pictures' paths),
- `verdict(results) -> (seed_reports, funcdl_got, passed)`: the row of `funcdl demo`'s table,
- `main()`: `python examples/NAME.py [options]`, the same as `funcdl run NAME [options]`.

Nothing in `funcdl` imports this package; matplotlib is imported inside the functions that plot.
"""
import importlib

NAMES = ("adaline", "relu_quadratic", "backprop", "optimizers", "boston", "xor", "digits")


def load(name):
    """The example module `funcdl.examples.<name>`; `name` must be one of `NAMES`."""
    if name not in NAMES:
        raise ValueError(f"`name` must be one of {', '.join(NAMES)}, got {name!r}")
    return importlib.import_module(f"funcdl.examples.{name}")


def figure(*subplots, width=6.0, height=4.0, layout="constrained"):
    """A matplotlib `Figure` on the Agg canvas (no pyplot, no GUI, no global backend switch).

    subplots: passed to `Figure.subplots` (e.g. `1, 2`). Returns `(fig, axes)`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=80, layout=layout)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(*subplots) if subplots else fig.add_subplot()


def save(fig, out_dir, name):
    """Write `fig` as `out_dir/name` (folders created); return the path as a string."""
    from pathlib import Path

    path = Path(out_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return str(path)


def command_line(name):
    """`main()` of example `name`: parse sys.argv like `funcdl run name ...` and exit with its code."""
    import sys

    from funcdl.cli import main

    sys.exit(main(["run", name, *sys.argv[1:]]))
