"""Checkpoints: any pytree of arrays in one safetensors file, written atomically, read verified.

    fdl.checkpoint.save("run.safetensors", {"params": params, "opt_state": opt_state},
                        metadata={"epoch": "3"})
    state = fdl.checkpoint.load("run.safetensors", like={"params": params, "opt_state": opt_state})
    params = fdl.checkpoint.load("run.safetensors", like={"params": params}, strict=False)["params"]

Format. Each leaf is stored under its `jax.tree_util.keystr` path (`"['params']['w']"`, `"[1].count"`
for a NamedTuple field inside a tuple) in an ordinary safetensors file, which
`safetensors.numpy.load_file` (or `safetensors.torch.load_file`) reads: an 8-byte little-endian
header length, a JSON header giving each tensor's dtype, shape and byte range, then the tensors'
bytes, C-ordered and little-endian. The structure comes back from `like`, never from the file:
nothing is unpickled. Optimizer states are NamedTuples of arrays, so they are pytrees like any
other; `None` and empty NamedTuples have no leaves and take no space.

Leaves keep their own dtype and shape: jax and NumPy arrays of bool, (u)int8-64,
float16/32/64, bfloat16 and complex64, 0-d included. Python `bool`/`int`/`float` become 0-d
`bool`/`int64`/`float64` arrays (NumPy's defaults, whatever `jax_enable_x64` says); NumPy
scalars keep their dtype. `load` returns NumPy arrays in host memory; `jax.device_put` them where
they are needed.

What is verified. `save` writes `"funcdl.sha256"`, the SHA-256 of the data section, into the
metadata (keys starting with `"funcdl."` are reserved). `load` and `metadata` open only regular
files, without blocking (a FIFO, a device or a socket is a `ValueError` at once), and check the
whole header against the file's size: a bounded length, known dtypes, each tensor's byte count
equal to its shape times its item size, the tensors tiling the data section exactly. `load` then
checks `like`'s keys, shapes and dtypes against the header before it reads any data, reads each
tensor with plain reads (no memory map: a file truncated meanwhile is a `ValueError`, never a
SIGBUS), and hashes the whole data section against `"funcdl.sha256"` where the file has one
(files from other tools load unverified). A file that exists but may not be read is a
`PermissionError`, never "no checkpoint". Every error names the path as it was given.

Memory. `load` holds the header and the arrays it returns, each read straight into its own
buffer, plus a 1 MiB buffer for hashing the tensors it skips. `save` writes the arrays from where
they are (after copying jax arrays to the host), so it needs no second copy of the file.

Atomicity. The bytes go to a temporary file `.NAME.<random>.tmp` in the folder of `path`, which
is fsynced, then moved over `path` with `os.replace`, then the folder is fsynced. A crash at any
moment leaves either the old file or the new one, whole; a process killed mid-write may leave its
temporary file behind (any other error removes it, and an `OSError` is re-raised with its class
and errno, naming `path`).
"""
from funcdl.checkpoint.header import DTYPES
from funcdl.checkpoint.reading import load, metadata
from funcdl.checkpoint.writing import save

__all__ = ["save", "load", "metadata"]

# The leaf dtypes a checkpoint holds (`save` refuses others).
SUPPORTED_DTYPES = tuple(DTYPES.values())
