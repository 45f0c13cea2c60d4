"""Git workspaces on the agent host, and GitHub repository creation.

See ``docs/workspaces.md``.
"""

from agentkit.workspaces.github import CreatedRepo, GitHubClient, github_web_url
from agentkit.workspaces.names import (
    MAX_NAME_LENGTH,
    NAME_PATTERN,
    InvalidNameError,
    WorkspacePath,
    resolve_workspace,
    validate_branch_name,
    validate_workspace_name,
)
from agentkit.workspaces.service import (
    BranchResult,
    CommitInfo,
    PushResult,
    WorkspaceInfo,
    WorkspaceService,
)
from agentkit.workspaces.urls import GitAllowlist, check_destination, parse_repo_url

__all__ = [
    "MAX_NAME_LENGTH",
    "NAME_PATTERN",
    "BranchResult",
    "CommitInfo",
    "CreatedRepo",
    "GitAllowlist",
    "GitHubClient",
    "InvalidNameError",
    "PushResult",
    "WorkspaceInfo",
    "WorkspacePath",
    "WorkspaceService",
    "check_destination",
    "github_web_url",
    "parse_repo_url",
    "resolve_workspace",
    "validate_branch_name",
    "validate_workspace_name",
]
