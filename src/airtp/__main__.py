"""``python -m airtp`` runs the ``airtp`` command."""

import sys

from airtp.cli import main

sys.exit(main())
