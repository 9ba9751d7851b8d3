"""``python -m artifactfs``: the same as the ``artifactfs`` command."""

import sys

from .cli import main

sys.exit(main())
