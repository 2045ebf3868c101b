"""`python -m tests.faults`: run the fault-injection suite (see suite.py)."""

import sys

from .suite import main

sys.exit(main())
