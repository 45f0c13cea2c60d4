"""``python3 -m agentkit_gateway`` in the gateway image (``python -m agentkit.gateway`` here)."""

from .server import main

main()
