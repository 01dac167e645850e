"""`fit`'s progress: a tqdm bar on a terminal, one line per epoch anywhere else.

On a terminal (stderr `isatty()`, or a Jupyter kernel's stream) the compiled training program
moves a tqdm bar from inside its `lax.scan`: it calls `report(token, position, loss)` through
`jax.debug.callback` at each call's first unit and every `progress_every` units (a traced
int, so changing it never recompiles). The compiled program cannot hold the bar itself (the
next `fit` reuses the program and has a new bar), so it holds a token, and `_open_bars` maps
the tokens of the bars open right now to them: an entry lives exactly as long as its `fit`
call (`with ProgressBar(...)`).

The compile is a phase of its own: until the first report arrives from a compiled program the
bar reads "compiling"; that report closes it and opens the bar proper with `initial` = the
position reported, so tqdm's rate `(n - initial) / elapsed` and its ETA count from the first
finished unit, never the compile.

Elsewhere (a log file, CI: stderr is not a terminal) there are no `\\r` frames at all: after
each compiled call, one line per epoch it ran, as Keras's `verbose=2`::

    Epoch 3/10 - 0.52s - loss: 0.1234 - mae: 0.2 - val_loss: 0.13

(epochs counted from 1; the seconds are the call's wall time divided by its epochs; a
full-batch call that runs many epochs in one dispatch prints all their lines after it).

`choose_every` picks k so that the bar moves about `UPDATES_PER_SECOND` times a second from
the measured time per unit; a callback costs tens of microseconds on CPU, so at 4 updates a
second it is far below 2% of the run (the benchmark measures it).
"""
import itertools
import sys
import time

import tqdm

UPDATES_PER_SECOND = 4
COMPILING = "compiling"  # the bar's description until the compiled program first reports
_open_bars = {}  # token -> ProgressBar, only while its fit runs
_tokens = itertools.count(1)


def report(token, position, loss):
    """Move bar `token` to `position` (units done since epoch 0) with `loss` in the postfix."""
    bar = _open_bars.get(int(token))
    if bar is not None:
        bar.move(int(position), float(loss))


_seconds_per_unit = {}  # EpochPlan -> seconds per unit measured on its last call


def first_every(plan, default: int) -> int:
    """k for the first call of a `fit`: from the last measured call of the same compiled program
    (`plan`) when there is one, so a short run repeated (the seeds' lessons, a benchmark) makes
    no callback at all where the bar could not move anyway; else `default`."""
    seconds = _seconds_per_unit.get(plan)
    return default if seconds is None else choose_every(seconds, 1, default)


def remember(plan, seconds: float, units: int) -> None:
    """Record that a call of `plan` took `seconds` for `units` units (for `first_every`)."""
    if units > 0 and seconds > 0:
        _seconds_per_unit[plan] = seconds / units


def choose_every(seconds: float, units: int, previous: int) -> int:
    """k: units between two callbacks so that the bar moves ~UPDATES_PER_SECOND times a second,
    given that `units` took `seconds`."""
    if units <= 0 or seconds <= 0:
        return previous
    return max(1, int(units / (seconds * UPDATES_PER_SECOND)))


def is_terminal(stream) -> bool:
    """Whether `stream` shows `\\r` frames as a moving bar: a tty, or a Jupyter kernel's
    output stream (which says it is no tty but renders tqdm's frames in place)."""
    isatty = getattr(stream, "isatty", None)
    if callable(isatty) and isatty():
        return True
    return type(stream).__module__.split(".")[0] == "ipykernel"


def format_value(value: float) -> str:
    """A history value to 4 significant digits, as the bar's postfix (a loss of 0.001082 keeps
    its digits, where Keras's 4 decimals would print 0.0011)."""
    return f"{value:.4g}"


def format_seconds(seconds: float) -> str:
    return f"{seconds:.2f}s" if seconds >= 0.01 else f"{seconds * 1e3:.3g}ms"


def epoch_line(epoch: int, epochs: int, seconds: float, names, row) -> str:
    """`Epoch {epoch}/{epochs} - {seconds} - name: value - ...` (`epoch` counted from 1)."""
    values = " - ".join(f"{name}: {format_value(float(value))}"
                        for name, value in zip(names, row))
    return f"Epoch {epoch}/{epochs} - {format_seconds(seconds)} - {values}"


class ProgressBar:
    """`with ProgressBar(total, initial, unit, enabled) as bar:` `fit`'s progress on stderr
    (nothing at all when not enabled), reachable from compiled code through `bar.token`.

    total, initial: units (steps or epochs) of the whole run and already done. On a terminal a
    tqdm bar (module docstring: the compile is its own phase); elsewhere one line per epoch,
    written by `finish_call`."""

    def __init__(self, total: int, initial: int, unit: str, enabled: bool):
        self.enabled, self.unit, self.total = enabled, unit, total
        self.token = next(_tokens) % (2 ** 31 - 1)
        self.stream = sys.stderr
        self.terminal = enabled and is_terminal(self.stream)
        self.compiling = self.terminal  # until the first report
        self.bar = self._tqdm(initial, COMPILING, leave=False) if self.terminal else None
        self.started = time.perf_counter()

    def _tqdm(self, initial: int, desc, leave: bool):
        return tqdm.tqdm(total=self.total, initial=initial, unit=self.unit, desc=desc,
                         file=self.stream, leave=leave)

    def __enter__(self):
        if self.bar is not None:
            _open_bars[self.token] = self
        return self

    def move(self, position: int, loss: float) -> None:
        """The bar at `position` (if it is past the bar's count) with `loss` in the postfix.
        The first move ends the compile phase: the "compiling" bar closes and the bar proper
        starts its clock at `position` (tqdm's `initial`)."""
        if self.bar is None:
            return
        if self.compiling:
            self.compiling = False
            self.bar.close()
            self.bar = self._tqdm(max(position, self.bar.n), None, leave=True)
        self.bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
        if position > self.bar.n:  # tqdm redraws at most every `mininterval` (0.1 s) from here
            self.bar.update(position - self.bar.n)

    def finish_call(self, position: int, means, names, first_epoch: int, seconds: float) -> None:
        """After a compiled call that ran epochs `first_epoch ..` (counted from 0) in `seconds`
        and reached `position` (units since epoch 0): means `(n_epochs, k)`, each epoch's
        history row, its columns named by `names` (column 0: the loss). A terminal's bar is
        set at `position` exactly with the last epoch's loss; elsewhere one line per epoch."""
        if not self.enabled or len(means) == 0:
            return
        if self.terminal:
            report(self.token, position, means[-1][0])
            self.bar.refresh()
            return
        units_per_epoch = position // (first_epoch + len(means))
        epochs = self.total // units_per_epoch
        for i, row in enumerate(means):
            print(epoch_line(first_epoch + i + 1, epochs, seconds / len(means), names, row),
                  file=self.stream)
        self.stream.flush()

    def __exit__(self, *exc):
        _open_bars.pop(self.token, None)
        if self.bar is not None:
            self.bar.close()
        return False
