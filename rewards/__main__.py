"""`python -m rewards ...`: the verify command (same as `rlvr verify` / `rlvr-verify`)."""

import sys

from rewards.cli import main

sys.exit(main())
