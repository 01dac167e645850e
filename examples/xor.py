"""`python examples/xor.py [--quick] [options]`: the same as `funcdl run xor`.

The lesson's code lives in the package, `funcdl/examples/xor.py`, so that the installed
`funcdl` command finds it too; this file only runs it from a source checkout.
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # the checkout's funcdl

from funcdl.examples.xor import main, run  # noqa: E402,F401

if __name__ == "__main__":
    main()
