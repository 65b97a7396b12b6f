"""``python -m hwmodel.cli``: the ``hwmodel`` command."""

import sys

from .app import main

sys.exit(main())
