"""`python examples/sort.py [--quick] [options]`: the same as `funcdl run sort`.

The lesson's code lives in the package, `funcdl/examples/sort.py`, so that the installed
`funcdl` command finds it too; this script only runs the command from a source checkout.
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # the checkout's funcdl

from funcdl.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["run", "sort", *sys.argv[1:]]))
