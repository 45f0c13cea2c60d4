"""The documented public surface holds whatever was imported first."""

from __future__ import annotations

import subprocess
import sys


def test_connect_is_the_function_even_after_its_submodule_was_imported() -> None:
    """``import agentkit.connect`` (the CLI and serve do) binds the package attribute to the
    submodule; ``from agentkit import connect`` must still give the function."""
    code = (
        "import agentkit.connect, agentkit.serve\n"
        "from agentkit import Connection, connect\n"
        "import inspect\n"
        "assert inspect.isfunction(connect), type(connect)\n"
        "assert connect.__module__ == 'agentkit.connect'\n"
        "assert isinstance(Connection, type)\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
