"""`python -m case_retrieval ...`: see `case_retrieval.cli`."""

import sys

from case_retrieval.cli import main

sys.exit(main())
