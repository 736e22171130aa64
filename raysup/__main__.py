"""``python -m raysup``: the ``raysup`` command."""
import sys

from raysup.cli import main

sys.exit(main())
