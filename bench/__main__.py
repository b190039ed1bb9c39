"""``python3 -m bench [--quick] [--out DIR] [--only SCENARIO ...]``: see bench/run.py."""

import sys

from bench.run import main

sys.exit(main())
