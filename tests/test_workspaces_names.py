"""Workspace names, path confinement, git branch names and clone URLs (pure Python, plus git
itself as the oracle for branch names)."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentkit.errors import PermissionDeniedError, ToolError
from agentkit.workspaces.names import (
    InvalidNameError,
    WorkspacePath,
    branch_name_problem,
    is_valid_workspace_name,
    normalize_root,
    resolve_workspace,
    validate_branch_name,
    validate_rev,
    validate_workspace_name,
    workspace_path,
)
from agentkit.workspaces.urls import parse_repo_url
from tests.gitserver import git_available
from tests.support import examples, require

ROOT = "/opt/agentflow/workspaces"

BAD_NAMES = [
    "",
    ".",
    "..",
    ".git",
    ".hidden",
    "../x",
    "a/b",
    "a\\b",
    "/etc",
    "-rf",
    "--help",
    "x" * 101,
    "x" * 300,
    "my project",
    "tab\tname",
    "new\nline",
    "name;rm",
    "$(id)",
    "\uff4dain",  # fullwidth m
    "\u0430pp",  # Cyrillic a
    "café",
    "~",
    "a*b",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_workspace_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidNameError) as info:
        validate_workspace_name(name)
    assert "letters, digits" in str(info.value) or "path separator" in str(info.value)


@pytest.mark.parametrize("name", ["a", "my-project", "My_Project.v2", "_x", "0", "x" * 100])
def test_good_workspace_names(name: str) -> None:
    assert validate_workspace_name(name) == name
    assert resolve_workspace(ROOT, name).path == f"{ROOT}/{name}"


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("demo", "demo"),
        (f"{ROOT}/demo", "demo"),
        (f"{ROOT}/demo/", "demo"),
        (f"{ROOT}//demo", "demo"),
    ],
)
def test_seed_style_workspace_paths_inside_the_root_are_accepted(value: str, name: str) -> None:
    ws = resolve_workspace(ROOT + "/", value)
    assert (ws.name, ws.path, ws.root) == (name, f"{ROOT}/{name}", ROOT)


@pytest.mark.parametrize(
    "value",
    [
        "/etc",
        "/etc/passwd",
        ROOT,
        f"{ROOT}/",
        f"{ROOT}/../workspaces/demo",
        f"{ROOT}/demo/../../etc",
        f"{ROOT}/demo/sub",
        "/opt/agentflow/workspaces-evil/demo",
        "/opt/agentflow",
        f"{ROOT}/.git",
        f"{ROOT}/-rf",
    ],
)
def test_paths_outside_or_deeper_than_the_root_are_refused(value: str) -> None:
    with pytest.raises((PermissionDeniedError, InvalidNameError)) as info:
        resolve_workspace(ROOT, value)
    assert str(info.value)


def test_relative_root_is_refused() -> None:
    with pytest.raises(ToolError):
        resolve_workspace("relative/root", "demo")


# --- branch names -------------------------------------------------------------------------------

BAD_BRANCHES = [
    "",
    "-x",
    "HEAD",
    "@",
    "a b",
    "a..b",
    "a~1",
    "a^",
    "a:b",
    "a?",
    "a*",
    "a[b",
    "a\\b",
    "a@{1}",
    "/a",
    "a/",
    "a//b",
    "a.",
    "a.lock",
    "x/.hidden",
    "x/y.lock/z",
    "tab\tx",
    "del\x7f",
    "b" * 201,
]


@pytest.mark.parametrize("name", BAD_BRANCHES)
def test_bad_branch_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidNameError):
        validate_branch_name(name)


@pytest.mark.parametrize("name", ["main", "feature/login", "fix-1.2", "a@b", "x/HEAD", "ünï"])
def test_good_branch_names(name: str) -> None:
    assert validate_branch_name(name) == name
    require(git_available(), "git")
    assert _git_accepts(name)  # the property test below then has accepted names to check


def _git_accepts(name: str) -> bool:
    proc = subprocess.run(
        ["git", "check-ref-format", "--branch", name], capture_output=True, check=False
    )
    return proc.returncode == 0


# "@" and the length cap are our own extra refusals; git accepts those.
@pytest.mark.parametrize("name", [b for b in BAD_BRANCHES if b not in ("@", "b" * 201)])
def test_git_agrees_with_the_refusals(name: str) -> None:
    require(git_available(), "git")
    assert not _git_accepts(name)


_branch_alphabet = st.sampled_from([*list("ab.-/_@{}~^:?*[\\ .lock"), "HEAD", ".lock", "é"])


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(_branch_alphabet, min_size=1, max_size=8).map("".join))
def test_whatever_we_accept_git_accepts(name: str) -> None:
    """Our rules may be stricter than git's, never looser (git is the oracle)."""
    if branch_name_problem(name) is None:
        assert _git_accepts(name), name


@pytest.mark.parametrize("rev", ["-x", "", "a b", "--upload-pack=evil", "x" * 300])
def test_bad_revisions_are_refused(rev: str) -> None:
    with pytest.raises(InvalidNameError):
        validate_rev(rev)


# --- clone URLs ---------------------------------------------------------------------------------

GH = "https://github.com"


@pytest.mark.parametrize(
    ("value", "url", "name", "token"),
    [
        ("octo/hello", f"{GH}/octo/hello.git", "hello", True),
        ("octo/hello.git", f"{GH}/octo/hello.git", "hello", True),
        (f"{GH}/octo/hello", f"{GH}/octo/hello", "hello", True),
        (f"{GH}/octo/hello.git/", f"{GH}/octo/hello.git/", "hello", True),
        ("git@github.com:octo/hello.git", "git@github.com:octo/hello.git", "hello", False),
        (
            "ssh://git@github.com/octo/hello.git",
            "ssh://git@github.com/octo/hello.git",
            "hello",
            False,
        ),
        ("https://gitlab.com/g/sub/proj.git", "https://gitlab.com/g/sub/proj.git", "proj", False),
    ],
)
def test_repo_urls(value: str, url: str, name: str, token: bool) -> None:
    parsed = parse_repo_url(value, GH)
    assert (parsed.url, parsed.default_name, parsed.uses_token) == (url, name, token)


def test_token_only_for_the_configured_origin() -> None:
    assert parse_repo_url("http://127.0.0.1:8080/a/b.git", "http://127.0.0.1:8080").uses_token
    assert not parse_repo_url("http://127.0.0.1:8081/a/b.git", "http://127.0.0.1:8080").uses_token
    assert not parse_repo_url("http://github.com/a/b.git", GH).uses_token  # scheme differs


@pytest.mark.parametrize(
    "value",
    [
        "/etc",
        "/root/secret-repo",
        "../x",
        "file:///etc",
        "ext::sh -c touch% /tmp/pwned",
        "ext::sh",
        "fd::17",
        "-uhelp",
        "--upload-pack=touch /tmp/pwned",
        "https://user:pw@github.com/a/b.git",
        "https://ghp_abcdefghijklmnopqrstuvwxyz0123456789@github.com/a/b.git",
        "",
        "a b/c",
        "ftp://example.com/x.git",
    ],
)
def test_unsupported_or_dangerous_urls_are_refused(value: str) -> None:
    with pytest.raises(ToolError) as info:
        parse_repo_url(value, GH)
    assert "ghp_abc" not in str(info.value)
    assert ":pw@" not in str(info.value)


@pytest.mark.parametrize(
    ("stderr", "auth"),
    [
        ("fatal: Authentication failed for 'http://127.0.0.1:44015/a/b.git/'", True),
        (
            "fatal: could not read Username for 'https://github.com': terminal prompts disabled",
            True,
        ),
        ("fatal: unable to access 'https://x/': The requested URL returned error: 403", True),
        ("remote: Permission to acme/x.git denied to bot.", True),
        ("remote: Repository not found.\nfatal: repository 'http://127.0.0.1:44015/a.git/'", False),
        ("fatal: unable to access 'http://127.0.0.1:40301/x/': Failed to connect", False),
    ],
)
def test_auth_failures_are_recognised_without_matching_port_numbers(
    stderr: str, auth: bool
) -> None:
    from agentkit.workspaces.service import _auth_failed

    assert _auth_failed(stderr) is auth


# --- the exact messages (what a model or a person reads to fix the call) ----------------------

SEPARATOR = "a workspace name is a single name, not a path; " + (
    "use 1-100 ASCII letters, digits, '-', '_' or '.', starting with a letter, digit or '_' "
    "(for example 'my-project')"
)
RULES = (
    "use 1-100 ASCII letters, digits, '-', '_' or '.', starting with a letter, digit or '_' "
    "(for example 'my-project')"
)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", f"workspace name is empty: {RULES}"),
        ("x" * 101, f"workspace name is 101 characters long, the limit is 100: {RULES}"),
        (
            "café",
            "workspace name 'café' contains non-ASCII characters (look-alike letters are "
            f"refused): {RULES}",
        ),
        (
            "a/b",
            f"workspace name 'a/b' contains a path separator: {SEPARATOR}",
        ),
        (
            "a\\b",
            f"workspace name 'a\\\\b' contains a path separator: {SEPARATOR}",
        ),
        (
            "/",
            f"workspace name '/' contains a path separator: {SEPARATOR}",
        ),
        (".git", f"workspace name '.git' starts with '.': {RULES}"),
        ("-rf", f"workspace name '-rf' starts with '-': {RULES}"),
        ("my project", f"workspace name 'my project' is not allowed: {RULES}"),
        ("x" * 61 + " ", f"workspace name '{'x' * 57}...' is not allowed: {RULES}"),
        ("x" * 59 + " ", f"workspace name '{'x' * 59} ' is not allowed: {RULES}"),
    ],
)
def test_workspace_name_messages(name: str, message: str) -> None:
    with pytest.raises(InvalidNameError) as info:
        validate_workspace_name(name)
    assert str(info.value) == message
    assert is_valid_workspace_name(name) is False


def test_valid_names_and_roots() -> None:
    for name in ("a", "x" * 100, "_x", "9.9-a_b"):
        assert validate_workspace_name(name) == name
        assert is_valid_workspace_name(name) is True
    assert normalize_root("/a//b/./c/") == "/a/b/c"
    with pytest.raises(ToolError) as info:
        normalize_root("relative/root")
    assert str(info.value) == "the workspace root must be an absolute path, got 'relative/root'"
    assert workspace_path("/r/", "w") == WorkspacePath(name="w", path="/r/w", root="/r")


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        ("", InvalidNameError, f"workspace name is empty: {RULES}"),
        (
            " w",
            InvalidNameError,
            f"workspace name ' w' has leading or trailing whitespace; pass it without: {RULES}",
        ),
        (
            "/r/café",
            InvalidNameError,
            f"workspace path '/r/café' contains non-ASCII characters: {RULES}",
        ),
        (
            "/r/./w",
            PermissionDeniedError,
            "workspace path '/r/./w' contains '.' or '..' components; pass the workspace name "
            "instead (workspaces live in /r/<name>)",
        ),
        (
            "/r/w/../x",
            PermissionDeniedError,
            "workspace path '/r/w/../x' contains '.' or '..' components; pass the workspace name "
            "instead (workspaces live in /r/<name>)",
        ),
        (
            "/r/w/src",
            PermissionDeniedError,
            "workspace path '/r/w/src' is not a workspace: it points deeper inside a workspace; "
            "pass the workspace name (a name like 'my-project' or a path /r/<name>)",
        ),
        (
            "/rx/w",
            PermissionDeniedError,
            "workspace path '/rx/w' is not a workspace: only workspaces under /r can be used "
            "(a name like 'my-project' or a path /r/<name>)",
        ),
        (
            "/r",
            PermissionDeniedError,
            "workspace path '/r' is not a workspace: only workspaces under /r can be used "
            "(a name like 'my-project' or a path /r/<name>)",
        ),
    ],
)
def test_resolve_workspace_messages(value: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as info:
        resolve_workspace("/r", value)
    assert type(info.value) is error
    assert str(info.value) == message


def test_resolve_workspace_accepts_names_and_paths_directly_under_the_root() -> None:
    expected = WorkspacePath(name="w", path="/r/w", root="/r")
    for value in ("w", "/r/w", "/r/w/", "/r//w"):
        assert resolve_workspace("/r/", value) == expected


def test_branch_and_rev_messages() -> None:
    with pytest.raises(InvalidNameError) as info:
        validate_branch_name("a..b")
    assert str(info.value) == (
        "branch name 'a..b' is not valid for git: it contains '..'. "
        "Use something like 'feature/add-login'."
    )
    with pytest.raises(InvalidNameError) as info:
        validate_branch_name("x y", what="base branch")
    assert str(info.value).startswith("base branch 'x y' is not valid for git: it contains a space")
    assert validate_rev("r" * 256) == "r" * 256
    for rev, message in (
        ("", "ref must be 1-256 characters"),
        ("r" * 257, "ref must be 1-256 characters"),
        ("-p", "ref '-p' starts with '-'"),
        ("a b", "ref 'a b' contains whitespace or control characters"),
        ("a\x7fb", "ref 'a\\x7fb' contains whitespace or control characters"),
        ("a\x00", "ref 'a\\x00' contains whitespace or control characters"),
    ):
        with pytest.raises(InvalidNameError) as info:
            validate_rev(rev)
        assert str(info.value) == message
    with pytest.raises(InvalidNameError, match=r"^commit must be 1-256 characters$"):
        validate_rev("", what="commit")


_NOT_ALLOWED = "(not allowed: spaces, control characters, ~ ^ : ? * [ \\)"


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "it is empty"),
        ("b" * 201, "it is longer than 200 characters"),
        ("b" * 200, None),
        ("-x", "it starts with '-'"),
        ("HEAD", "'HEAD' is reserved by git"),
        ("@", "'@' is reserved by git"),
        ("a b", f"it contains a space {_NOT_ALLOWED}"),
        ("a\x01b", f"it contains a control character {_NOT_ALLOWED}"),
        ("a\x1fb", f"it contains a control character {_NOT_ALLOWED}"),
        ("a~b", f"it contains '~' {_NOT_ALLOWED}"),
        ("a:b", f"it contains ':' {_NOT_ALLOWED}"),
        ("a*b", f"it contains '*' {_NOT_ALLOWED}"),
        ("a\x7fb", f"it contains '\\x7f' {_NOT_ALLOWED}"),
        ("a@{b", "it contains '@{'"),
        ("a..b", "it contains '..'"),
        ("/a", "it starts or ends with '/' or contains '//'"),
        ("a/", "it starts or ends with '/' or contains '//'"),
        ("a//b", "it starts or ends with '/' or contains '//'"),
        ("a.", "it ends with '.'"),
        ("a/.b", "the part '.b' starts with '.'"),
        ("a/b.lock", "the part 'b.lock' ends with '.lock'"),
        ("feature/x", None),
    ],
)
def test_branch_name_problems_word_for_word(name: str, problem: str | None) -> None:
    assert branch_name_problem(name) == problem


def test_shown_values_are_cut_after_sixty_characters() -> None:
    with pytest.raises(InvalidNameError) as info:
        validate_workspace_name("x" * 60 + " ")  # 61 characters: cut
    assert str(info.value) == f"workspace name '{'x' * 57}...' is not allowed: {RULES}"
    with pytest.raises(InvalidNameError) as info:
        validate_workspace_name("Xylophone!")  # a capital X is a letter like any other
    assert str(info.value) == f"workspace name 'Xylophone!' is not allowed: {RULES}"
    assert validate_workspace_name("Xylophone") == "Xylophone"


def test_resolve_workspace_refuses_what_is_not_text() -> None:
    for value in (None, 5):
        with pytest.raises(InvalidNameError, match="workspace name is empty"):
            resolve_workspace("/r", value)  # type: ignore[arg-type]
