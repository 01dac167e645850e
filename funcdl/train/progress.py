"""The tqdm progress bar that a compiled training program moves from inside its `lax.scan`.

The program calls `report(token, position, loss)` through `jax.debug.callback` every
`progress_every` steps (a traced int, so changing it never recompiles). The compiled program
cannot hold the bar itself (the next `fit` reuses the program and has a new bar), so it holds
a token, and `_open_bars` maps the tokens of the bars that are open right now to them: an
entry lives exactly as long as its `fit` call (`with ProgressBar(...)`).

`choose_every` picks k so that the bar moves about `UPDATES_PER_SECOND` times a second from
the measured time per unit; a callback costs tens of microseconds on CPU, so at 4 updates a
second it is far below 2% of the run (the benchmark measures it).
"""
import itertools
import sys
import time

import tqdm

UPDATES_PER_SECOND = 4
_open_bars = {}  # token -> tqdm bar, only while its fit runs
_tokens = itertools.count(1)


def report(token, position, loss):
    """Move bar `token` to `position` (units done since epoch 0) with `loss` in the postfix."""
    bar = _open_bars.get(int(token))
    if bar is None:
        return
    position = int(position)
    bar.set_postfix(loss=f"{float(loss):.4g}", refresh=False)
    if position > bar.n:  # tqdm redraws at most every `mininterval` (0.1 s) from here
        bar.update(position - bar.n)


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


class ProgressBar:
    """`with ProgressBar(total, initial, unit, enabled) as bar:` a tqdm bar on stderr (nothing
    at all when not enabled), reachable from compiled code through `bar.token`."""

    def __init__(self, total: int, initial: int, unit: str, enabled: bool):
        self.enabled, self.unit = enabled, unit
        self.token = next(_tokens) % (2 ** 31 - 1)
        self.bar = (tqdm.tqdm(total=total, initial=initial, unit=unit, file=sys.stderr,
                              leave=True) if enabled else None)
        self.started = time.perf_counter()

    def __enter__(self):
        if self.bar is not None:
            _open_bars[self.token] = self.bar
        return self

    def finish_call(self, position: int, loss) -> None:
        """After a compiled call: the bar at `position` exactly, with the epoch's loss."""
        if self.bar is not None:
            report(self.token, position, loss)
            self.bar.refresh()

    def __exit__(self, *exc):
        _open_bars.pop(self.token, None)
        if self.bar is not None:
            self.bar.close()
        return False
