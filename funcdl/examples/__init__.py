"""The seeds' lessons as runnable examples: `funcdl list`, `funcdl run NAME`, `funcdl demo`.

Each module here is one lesson, read top to bottom: build the model, initialise, prepare the
data, train, show. Each has
- `SEED` (which seed document it reproduces) and `SHOWS` (one line: what it shows),
- `OPTIONS`: the overrides it takes from the command line (`epochs`, `lr`, `optimizer`, `backend`),
- `run(quick=False, out_dir=..., **overrides) -> dict`: trains, prints, writes its pictures to
  `out_dir` and returns its results (numbers, `quick`, and the pictures' paths),
- `verdict(results) -> (reference, funcdl_got, passed)`: for a full run, `reference` is what the
  seed reports and the row of `funcdl demo`'s table; for a quick run (`results["quick"]`), what
  that shorter run checks instead (it never claims the seed's numbers).

The command line sits on top of this package, never below it: `funcdl run NAME` (`funcdl.cli`)
and the scripts `examples/NAME.py` of a source checkout call the modules here; nothing here
imports `funcdl.cli`. matplotlib is imported inside the functions that plot.

Every picture goes through `figure` and `save` (or `save_animation`), which fix what a picture
must be to read at its native size: `DPI` dots per inch (stored in the PNG's pHYs chunk) and
text of at least `MIN_FONT_PT` points.
"""
import importlib

NAMES = ("adaline", "relu_quadratic", "backprop", "optimizers", "boston", "xor", "digits", "sine", "sort")
DPI = 120  # pixels per inch of every picture, in the PNG's pHYs chunk (reads back >= 100: 119.99)
MIN_FONT_PT = 9  # the smallest text any picture may hold, in points (1/72 inch)


def load(name):
    """The example module `funcdl.examples.<name>`; `name` must be one of `NAMES` (else ValueError).

    Examples:
        >>> from funcdl import examples
        >>> backprop = examples.load("backprop")
        >>> backprop.SEED, backprop.OPTIONS
        ('002', ('lr', 'backend'))
    """
    if name not in NAMES:
        raise ValueError(f"`name` must be one of {', '.join(NAMES)}, got {name!r}")
    return importlib.import_module(f"funcdl.examples.{name}")


def figure(*subplots, width=6.0, height=4.0, layout="constrained"):
    """A matplotlib `Figure` on the Agg canvas (no pyplot, no GUI, no global backend switch).

    width, height: inches; at `DPI` the picture is `width * DPI` by `height * DPI` pixels.
    subplots: passed to `Figure.subplots` (e.g. `1, 2`). Returns `(fig, axes)`.

    Examples:
        >>> import tempfile
        >>> from PIL import Image
        >>> from funcdl import examples
        >>> fig, ax = examples.figure(width=5, height=3)
        >>> _ = ax.plot([0, 1], [1, 0])
        >>> with Image.open(examples.save(fig, tempfile.mkdtemp(), "line.png")) as image:
        ...     image.size, round(image.info["dpi"][0])
        ((600, 360), 120)
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(*subplots) if subplots else fig.add_subplot()


def legend_outside(ax, **options):
    """`ax`'s legend to the right of its axes (so it covers no curve); constrained layout makes room."""
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **options)


def save(fig, out_dir, name):
    """Write `fig` as `out_dir/name` at `DPI` (folders created); return the path as a string."""
    from pathlib import Path

    path = Path(out_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return str(path)


def save_animation(fig, draw_frame, frames, out_dir, name, fps):
    """An animated GIF `out_dir/name` of `fig`: one picture after `draw_frame(frame)` for each
    of `frames`, shown `fps` a second, looping.

    draw_frame: `frame -> the artists it changed` (curves, titles). Everything else is drawn
    once and restored under each frame (blitting), so a frame costs a few artists, not a whole
    figure. The GIF is `width * DPI` pixels wide, `width` the figure's (inches). Returns the path.
    """
    from pathlib import Path

    import numpy as np
    from PIL import Image

    path = Path(out_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas = fig.canvas
    for artist in draw_frame(frames[0]):
        artist.set_animated(True)  # left out of the background
    canvas.draw()
    background = canvas.copy_from_bbox(fig.bbox)
    pictures = []
    for frame in frames:
        canvas.restore_region(background)
        for artist in draw_frame(frame):
            fig.draw_artist(artist)
        pictures.append(Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3]))
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=round(1000 / fps),
                     loop=0)
    return str(path)
