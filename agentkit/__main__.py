"""``python -m agentkit`` is the ``agentkit`` command."""

import sys

from agentkit.cli.main import main

sys.exit(main())
