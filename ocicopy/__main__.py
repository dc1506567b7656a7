"""``python -m ocicopy``."""

import sys

from ocicopy.cli import main

if __name__ == "__main__":  # not in a process spawned from this one (a local Dask cluster's workers)
    sys.exit(main())
