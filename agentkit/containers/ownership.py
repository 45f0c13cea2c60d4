"""Which containers a service may touch: agentkit's, of its own ``AGENTKIT_ROOT``.

One engine may serve several agentkit roots (tests, users): each service manages only the
containers of its own root, whose records it holds, and never a container agentkit did not
create. Ids are checked for shape first (:func:`validate_agent_id`), without the engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentkit.containers.models import LABEL_MANAGED_BY, LABEL_ROOT, MANAGED_BY
from agentkit.errors import NotFoundError, PermissionDeniedError

if TYPE_CHECKING:
    from agentkit.runtimes.base import RunInfo, Runtime

__all__ = ["inspect_owned", "scope_labels"]


def scope_labels(root: str) -> dict[str, str | None]:
    """The labels that select the containers of the agentkit root ``root``."""
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_ROOT: root}


async def inspect_owned(runtime: Runtime, run_id: str, root: str) -> RunInfo | None:
    """The container ``run_id`` if it exists, ``None`` if not; refused if it is not ours.

    ``run_id`` must already be validated. Raises :class:`PermissionDeniedError` for a container
    agentkit did not create, or one of another agentkit root.
    """
    try:
        info = await runtime.inspect(run_id)
    except NotFoundError:
        return None
    if info.labels.get(LABEL_MANAGED_BY) != MANAGED_BY or info.name != run_id:
        raise PermissionDeniedError(
            f"container {run_id} was not created by agentkit: refusing to touch it"
        )
    if info.labels.get(LABEL_ROOT) != root:
        raise PermissionDeniedError(
            f"agent {run_id} belongs to another agentkit root "
            f"({info.labels.get(LABEL_ROOT)!r}, not {root!r}): use that one"
        )
    return info
