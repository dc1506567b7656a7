"""``python -m ocicopy``."""

import sys

from ocicopy.cli import main

sys.exit(main())
