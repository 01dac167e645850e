"""Helper process for tests/test_checkpoint.py's atomicity test (not a test module itself).

    python tests/checkpoint_worker.py PATH

saves version 0 at PATH, prints "ready", then obeys one command per line of stdin:
  "fork": fork a child that saves versions 1, 0, 1, 0, ... at PATH as fast as it can; after its
          first save it prints "child PID" (the test then SIGKILLs it at a random moment);
  "wait": reap that child and print "status STATUS" (the `os.waitpid` status);
  "quit": exit.
Forking from this process costs no new Python and jax start per kill, so the test kills a writer
many times in a few seconds. Children use only NumPy arrays (no XLA), so forking after `import
jax` is safe; each child stops by itself if its parent dies or after `CHILD_LIFETIME_S`.
"""
import os
import sys
import time

import jax.numpy as jnp
import numpy as np

CHILD_LIFETIME_S = 20.0


def version(k):
    """Checkpoint number k (0 or 1): `(tree, metadata)`. The two differ in every value, in a
    shape and in a key, so a file mixing them cannot pass for either; ~1 MB, so that a kill
    often lands inside a write."""
    rows = 512 if k == 0 else 384
    tree = {
        "params": {
            "w": np.arange(rows * 512, dtype=np.float32).reshape(rows, 512) * (k + 1),
            "b": np.full(512, k + 1, dtype=jnp.bfloat16),
        },
        "step": np.int64(1000 + k),
    }
    if k == 1:
        tree["params"]["extra"] = np.ones(7, np.float64)
    return tree, {"version": str(k)}


def _save_forever(path, save):
    parent, start = os.getppid(), time.monotonic()
    for i in range(10**9):
        tree, metadata = version((i + 1) % 2)
        save(path, tree, metadata=metadata)
        if i == 0:
            os.write(1, f"child {os.getpid()}\n".encode())
        if os.getppid() != parent or time.monotonic() - start > CHILD_LIFETIME_S:
            os._exit(0)


def main(path):
    from funcdl.checkpoint import save

    tree, metadata = version(0)
    save(path, tree, metadata=metadata)
    print("ready", flush=True)
    child = None
    for line in sys.stdin:
        command = line.strip()
        if command == "fork":
            sys.stdout.flush()
            child = os.fork()
            if child == 0:
                try:
                    _save_forever(path, save)
                finally:
                    os._exit(1)
        elif command == "wait":
            _, status = os.waitpid(child, 0)
            print(f"status {status}", flush=True)
        elif command == "quit":
            return


if __name__ == "__main__":
    main(sys.argv[1])
