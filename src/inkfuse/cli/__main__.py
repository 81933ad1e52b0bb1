"""`python -m inkfuse.cli ...`, which is how `torchrun` starts the command on every rank."""

import sys

from inkfuse.cli.app import main

sys.exit(main())
