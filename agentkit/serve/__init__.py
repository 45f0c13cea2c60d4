"""``agentkit serve``: an HTTP API (REST + Server-Sent Events) and a live dashboard.

Needs the ``serve`` extra (``pip install 'claude-agentkit[serve]'``). See ``docs/serve.md``.

* :func:`create_app` - the ASGI app over :func:`agentkit.connect`'s services;
* :func:`serve` - run it with uvicorn (loopback by default, refuses to start without a token).
"""

from agentkit.serve.app import create_app
from agentkit.serve.server import serve

__all__ = ["create_app", "serve"]
