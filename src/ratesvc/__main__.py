"""`python -m ratesvc` runs the same CLI as the `ratesvc` console script."""

import sys

from ratesvc.cli import main

sys.exit(main())
