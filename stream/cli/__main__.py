"""``python -m stream.cli``: the ``defacto`` command."""

import sys

from stream.cli import main

sys.exit(main())
