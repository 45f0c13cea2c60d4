"""Workspace names, workspace paths and git branch names: validation and confinement.

A workspace lives at ``<AGENTKIT_ROOT>/workspaces/<name>``. Names are short ASCII identifiers so
that they are safe as a single path component everywhere (shell, Docker mounts, URLs):

* letters, digits, ``-``, ``_`` and ``.``;
* the first character is a letter, digit or ``_`` (no leading dot: no ``.``, ``..``, ``.git``,
  hidden directories; no leading dash: never mistaken for a command-line option);
* at most :data:`MAX_NAME_LENGTH` characters;
* ASCII only, so Unicode look-alikes (fullwidth or Cyrillic letters) are refused.

Everything here is pure Python: no I/O, so it is cheap and identical for every executor.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from agentkit.errors import PermissionDeniedError, ToolError

MAX_NAME_LENGTH = 100
MAX_BRANCH_LENGTH = 200

NAME_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}"
_NAME_RE = re.compile(NAME_PATTERN)

NAME_RULES = (
    "use 1-100 ASCII letters, digits, '-', '_' or '.', starting with a letter, digit or '_' "
    "(for example 'my-project')"
)


class InvalidNameError(ToolError):
    """A workspace or branch name breaks the naming rules; the message says which rule."""


def _show(value: str) -> str:
    shown = value if len(value) <= 60 else value[:57] + "..."
    return repr(shown)


def validate_workspace_name(name: str) -> str:
    """Return ``name`` if it is a valid workspace name, else raise :class:`InvalidNameError`."""
    if not isinstance(name, str) or not name:
        raise InvalidNameError(f"workspace name is empty: {NAME_RULES}")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidNameError(
            f"workspace name is {len(name)} characters long, the limit is {MAX_NAME_LENGTH}: "
            f"{NAME_RULES}"
        )
    if not name.isascii():
        raise InvalidNameError(
            f"workspace name {_show(name)} contains non-ASCII characters "
            f"(look-alike letters are refused): {NAME_RULES}"
        )
    if "/" in name or "\\" in name:
        raise InvalidNameError(
            f"workspace name {_show(name)} contains a path separator: a workspace name is a "
            f"single name, not a path; {NAME_RULES}"
        )
    if name[0] in ".-":
        raise InvalidNameError(
            f"workspace name {_show(name)} starts with {name[0]!r}: {NAME_RULES}"
        )
    if not _NAME_RE.fullmatch(name):
        raise InvalidNameError(f"workspace name {_show(name)} is not allowed: {NAME_RULES}")
    return name


def is_valid_workspace_name(name: str) -> bool:
    try:
        validate_workspace_name(name)
    except InvalidNameError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class WorkspacePath:
    """A validated workspace: its ``name`` and its absolute ``path`` on the executor's host."""

    name: str
    path: str
    root: str


def normalize_root(root: str) -> str:
    """The workspace root as an absolute, normalized POSIX path (no trailing slash)."""
    if not root.startswith("/"):
        raise ToolError(f"the workspace root must be an absolute path, got {root!r}")
    return posixpath.normpath(root)


def workspace_path(root: str, name: str) -> WorkspacePath:
    """The path of workspace ``name`` under ``root`` (the name is validated)."""
    root = normalize_root(root)
    validate_workspace_name(name)
    path = posixpath.join(root, name)
    # Belt and braces: the validated name can never leave the root.
    if posixpath.dirname(path) != root:  # pragma: no cover - excluded by the name rules
        raise PermissionDeniedError(f"workspace {name!r} resolves outside {root}")
    return WorkspacePath(name=name, path=path, root=root)


def resolve_workspace(root: str, value: str) -> WorkspacePath:
    """Resolve a workspace name, or a seed-style ``workspace_path``, to a :class:`WorkspacePath`.

    Accepted: a bare name (``my-project``) or an absolute path that points at a workspace
    directly under ``root`` (``/opt/agentflow/workspaces/my-project``, trailing slash allowed).
    Everything else (relative paths, ``..``, paths outside the root, the root itself, paths
    deeper inside a workspace) is refused with a message that says what to pass instead.
    """
    root = normalize_root(root)
    if not isinstance(value, str) or not value:
        raise InvalidNameError(f"workspace name is empty: {NAME_RULES}")
    if value != value.strip():
        # One rule for every tool: create_workspace refuses such a name, so nothing may
        # silently strip it (the name a tool acted on must be the name it was given).
        raise InvalidNameError(
            f"workspace name {_show(value)} has leading or trailing whitespace; pass it "
            f"without: {NAME_RULES}"
        )
    if not value.startswith("/"):
        return workspace_path(root, value)
    if not value.isascii():
        raise InvalidNameError(
            f"workspace path {_show(value)} contains non-ASCII characters: {NAME_RULES}"
        )
    raw_parts = [part for part in value.split("/") if part]
    if any(part in (".", "..") for part in raw_parts):
        raise PermissionDeniedError(
            f"workspace path {_show(value)} contains '.' or '..' components; pass the "
            f"workspace name instead (workspaces live in {root}/<name>)"
        )
    path = posixpath.normpath(value)
    if posixpath.dirname(path) != root:
        inside = path.startswith(root + "/")
        hint = (
            "it points deeper inside a workspace; pass the workspace name"
            if inside
            else f"only workspaces under {root} can be used"
        )
        raise PermissionDeniedError(
            f"workspace path {_show(value)} is not a workspace: {hint} "
            f"(a name like 'my-project' or a path {root}/<name>)"
        )
    return workspace_path(root, posixpath.basename(path))


# --- git branch names ---------------------------------------------------------------------------

_BAD_REF_CHARS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def branch_name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid branch name (``git check-ref-format --branch``), or ``None``.

    The rules of git-check-ref-format(1), applied to ``refs/heads/<name>``, plus a length cap
    and the extra refusals of ``--branch``: no leading ``-``, not ``HEAD``, not ``@``.
    """
    if not name:
        return "it is empty"
    if len(name) > MAX_BRANCH_LENGTH:
        return f"it is longer than {MAX_BRANCH_LENGTH} characters"
    if name.startswith("-"):
        return "it starts with '-'"
    if name in ("HEAD", "@"):
        return f"{name!r} is reserved by git"
    bad = _BAD_REF_CHARS.search(name)
    if bad:
        char = bad.group(0)
        shown = "a space" if char == " " else "a control character" if char < " " else repr(char)
        return f"it contains {shown} (not allowed: spaces, control characters, ~ ^ : ? * [ \\)"
    if "@{" in name:
        return "it contains '@{'"
    if ".." in name:
        return "it contains '..'"
    if name.startswith("/") or name.endswith("/") or "//" in name:
        return "it starts or ends with '/' or contains '//'"
    if name.endswith("."):
        return "it ends with '.'"
    for component in name.split("/"):
        if component.startswith("."):
            return f"the part {component!r} starts with '.'"
        if component.endswith(".lock"):
            return f"the part {component!r} ends with '.lock'"
    return None


def validate_branch_name(name: str, *, what: str = "branch name") -> str:
    """Return ``name`` if git accepts it as a branch name, else raise :class:`InvalidNameError`."""
    problem = branch_name_problem(name)
    if problem:
        raise InvalidNameError(
            f"{what} {_show(name)} is not valid for git: {problem}. Use something like "
            f"'feature/add-login'."
        )
    return name


def validate_rev(rev: str, *, what: str = "ref") -> str:
    """A revision argument (branch, tag, commit, ``origin/main``) safe to put in an argv.

    Git resolves it; here it only has to be non-empty, free of whitespace/control characters
    and unable to pass for an option.
    """
    if not rev or len(rev) > 256:
        raise InvalidNameError(f"{what} must be 1-256 characters")
    if rev.startswith("-"):
        raise InvalidNameError(f"{what} {_show(rev)} starts with '-'")
    if re.search(r"[\x00-\x20\x7f]", rev):
        raise InvalidNameError(f"{what} {_show(rev)} contains whitespace or control characters")
    return rev
