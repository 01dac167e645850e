"""Ctrl-C during `fit` and `sweep`, never lost between two compiled calls.

Python raises KeyboardInterrupt in the main thread at the next bytecode after SIGINT; code in
between (a library's C++ call polling for signals, a handler that catches too much) can swallow
it, and training would then run on for all its epochs. While `CtrlC` is entered, SIGINT is
recorded as well as raised, so the host loop can raise it again at the next call boundary
(`check`). Only in the main thread and only over Python's own default handler: a handler
the user installed, or SIGINT ignored (a process started with it ignored gets no handler from
Python), is left alone.
"""
import signal
import threading


class CtrlC:
    """`with CtrlC() as ctrl_c:` ... `ctrl_c.check()` between calls raises KeyboardInterrupt
    when SIGINT arrived since entering (even if the first one was swallowed)."""

    def __init__(self):
        self.pressed, self._previous = False, None

    def __enter__(self):
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def _on_sigint(self, signum, frame):
        self.pressed = True
        signal.default_int_handler(signum, frame)  # raises KeyboardInterrupt, as Python does

    def check(self) -> None:
        if self.pressed:
            raise KeyboardInterrupt

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False
