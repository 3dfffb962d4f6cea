"""``python -m prunekit``: the command line (also what ``torchrun --module prunekit`` starts)."""

import sys

from .cli import main

sys.exit(main())
