"""Helper process for tests/test_checkpoint.py (not a test module itself).

    python tests/checkpoint_worker.py PATH

saves version 0 at PATH, prints "ready", then obeys one command per line of stdin:
  "fork": fork a child that saves versions 1, 0, 1, 0, ... at PATH as fast as it can; after its
          first save it prints "child PID" (the test then SIGKILLs it at a random moment);
  "wait": reap that child and print "status STATUS" (the `os.waitpid` status);
  "quit": exit.
Forking from this process costs no new Python and jax start per kill, so the test kills a writer
many times in a few seconds. Children use only NumPy arrays (no XLA), so forking after `import
jax` is safe; each child stops by itself if its parent dies or after `CHILD_LIFETIME_S`.

    python tests/checkpoint_worker.py --hammer PATH LOADS

loads PATH LOADS times while a thread rewrites it in place (the same inode, as `open(..., "r+b")`
would) with one of two versions of the same layout, truncating it at a random length before
half of the rewrites; then prints the count of each outcome as JSON: "whole" (equal to one
version, bit for bit), "ValueError", "mixed" (neither version: silently wrong), and "other"
(any other exception). A memory-mapped reader dies of SIGBUS here, which the caller sees as the
return code.
"""
import json
import os
import random
import sys
import threading
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


def hammered_version(k):
    """Version k (0 or 1) for `hammer`: the same keys, shapes and dtypes, other values; ~2 MB."""
    return {"w": np.full((512, 1024), k + 1, np.float32), "b": np.full(1000, -k, jnp.bfloat16)}


def hammer(path, loads):
    from funcdl.checkpoint import load, save

    images = []
    for k in (0, 1):
        save(path, hammered_version(k))
        with open(path, "rb") as file:
            images.append(file.read())
    flat = [{f"['{name}']": value for name, value in hammered_version(k).items()} for k in (0, 1)]
    stop = threading.Event()

    def rewrite_in_place():
        rng = random.Random(0)
        with open(path, "r+b", buffering=0) as file:
            while not stop.is_set():
                if rng.random() < 0.5:
                    file.truncate(rng.randrange(len(images[0])))
                file.seek(0)
                file.write(images[rng.randrange(2)])
                time.sleep(rng.uniform(0.0, 0.004))  # whole for a moment: some loads start whole

    counts = {"whole": 0, "ValueError": 0, "mixed": 0, "other": 0}
    writer = threading.Thread(target=rewrite_in_place)
    writer.start()
    try:
        for _ in range(loads):
            try:
                loaded = load(path)
            except ValueError:
                counts["ValueError"] += 1
                continue
            except Exception:  # noqa: BLE001 (counted: the caller asserts there are none)
                counts["other"] += 1
                continue
            whole = any(loaded.keys() == version.keys() and all(
                loaded[key].tobytes() == version[key].tobytes() for key in version)
                for version in flat)
            counts["whole" if whole else "mixed"] += 1
    finally:
        stop.set()
        writer.join()
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "--hammer":
        hammer(sys.argv[2], int(sys.argv[3]))
    else:
        main(sys.argv[1])
