"""`python -m funcdl ...`: the same as the `funcdl` command."""
import sys

from funcdl.cli import main

if __name__ == "__main__":
    sys.exit(main())
