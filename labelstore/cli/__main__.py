"""``python -m labelstore.cli``."""
import sys

from . import main

sys.exit(main())
