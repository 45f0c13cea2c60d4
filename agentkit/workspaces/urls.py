"""Clone URLs: what ``clone_repo`` accepts, and where it may fetch from.

A clone makes the agent host open a connection the model chose, so the destination is checked
like a server-side request from an untrusted user (SSRF):

* :func:`parse_repo_url` accepts https/http/ssh/git URLs, ``user@host:path`` and ``owner/repo``
  shorthand, and refuses local paths, ``file://``, ``ext::`` and other transports, credentials
  inside the URL, fragments and queries.
* :func:`check_destination` applies ``AGENTKIT_GIT_ALLOW``: by default only the configured GitHub
  origin and *public* https hosts (port 443, every address the name resolves to is a global
  address: never loopback, private, link-local, CGNAT, multicast or reserved ranges). Names are
  resolved on the agent host (where git runs) and git is pinned to the addresses that were
  checked (``http.curloptResolve``) and told not to follow redirects, so neither DNS rebinding nor
  a redirect can move the clone to an address that was not checked.
* ssh clones would authenticate with the agent host's own keys and agent: refused unless
  ``AGENTKIT_GIT_SSH_HOST_KEYS`` allows it.

Security decisions use the parsed raw URL; only messages use the display form.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from agentkit.config import Settings
from agentkit.errors import ConfigError, PermissionDeniedError, ToolError
from agentkit.redact import strip_url_credentials
from agentkit.workspaces.git import origin_of, same_origin
from agentkit.workspaces.github import github_web_url
from agentkit.workspaces.names import InvalidNameError, is_valid_workspace_name

#: Longest repo_url accepted (checked before any parsing).
MAX_URL_LENGTH = 2048

_SHORTHAND = re.compile(r"(?P<owner>[A-Za-z0-9][A-Za-z0-9-]{0,38})/(?P<repo>[A-Za-z0-9._-]{1,100})")
_SCP_LIKE = re.compile(
    r"(?P<user>[A-Za-z0-9._-]{1,64})@(?P<host>[A-Za-z0-9.-]{1,253}):(?P<path>[^\s]{1,1024})"
)
_HOST_NAME = re.compile(r"[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?")
_HOST_ENTRY = re.compile(r"(?:\*\.)?[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_URL_FORMS = (
    "an https URL (https://github.com/owner/repo.git), an ssh URL (git@github.com:owner/repo.git "
    "or ssh://git@host/owner/repo.git) or owner/repo shorthand"
)
_DEFAULT_PORTS = {"https": 443, "http": 80, "ssh": 22, "git": 9418}

Resolver = Callable[[str], Awaitable[Sequence[str]]]


@dataclass(frozen=True, slots=True)
class RepoURL:
    """A clone URL accepted by :func:`parse_repo_url`, and the workspace name it suggests."""

    url: str
    default_name: str
    uses_token: bool
    scheme: str = "https"
    host: str = ""
    port: int = 443

    @property
    def shown(self) -> str:
        """The URL for messages (never for decisions)."""
        return strip_url_credentials(self.url)


@dataclass(frozen=True, slots=True)
class CloneTarget:
    """A destination that passed :func:`check_destination`, and the git options that keep the
    clone there (``-c`` pairs to put before the ``clone`` subcommand)."""

    repo: RepoURL
    addresses: tuple[str, ...]
    git_options: tuple[str, ...]


def parse_repo_url(value: str, github_url: str) -> RepoURL:
    """Accept https/http/ssh/git URLs, ``user@host:path`` and ``owner/repo`` shorthand.

    Local paths, ``file://`` and transports like ``ext::`` are refused (they would read the
    host's files or run commands); so are credentials inside the URL (use GITHUB_TOKEN).
    """
    if not isinstance(value, str) or len(value) > MAX_URL_LENGTH:
        raise ToolError(f"repo_url must be {_URL_FORMS}, at most {MAX_URL_LENGTH} characters")
    url = value
    if not url or any(c <= " " or c == "\x7f" for c in url):
        raise ToolError(f"repo_url must be {_URL_FORMS}, without spaces or control characters")
    if url.startswith("-"):
        raise ToolError(f"repo_url may not start with '-'; give {_URL_FORMS}")
    shorthand = _SHORTHAND.fullmatch(url)
    if shorthand:
        repo = shorthand.group("repo")
        suffix = "" if repo.endswith(".git") else ".git"
        url = f"{github_url.rstrip('/')}/{shorthand.group('owner')}/{repo}{suffix}"
    scp = _SCP_LIKE.fullmatch(url)
    if scp and "://" not in url:
        _check_host(scp.group("host"), value)
        return RepoURL(
            url,
            _default_name(scp.group("path"), value),
            uses_token=False,
            scheme="ssh",
            host=scp.group("host").lower(),
            port=22,
        )
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ToolError(
            f"repo_url {strip_url_credentials(value)!r} is not supported: give {_URL_FORMS}. "
            "Local paths, file:// and other transports are refused."
        )
    if parts.password is not None or (parts.username and parts.scheme in ("https", "http")):
        raise ToolError(
            "repo_url contains credentials; remove them. The GitHub token is taken from "
            "GITHUB_TOKEN and handed to git without ever entering a URL."
        )
    if parts.fragment or parts.query or "#" in url or "?" in url:
        raise ToolError(
            f"repo_url {strip_url_credentials(value)!r} has a query or fragment ('?' or '#'); "
            "a clone URL has neither"
        )
    try:
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise ToolError(f"repo_url {strip_url_credentials(value)!r} has an invalid port") from None
    _check_host(parts.hostname, value)
    return RepoURL(
        url,
        _default_name(parts.path, value),
        uses_token=same_origin(url, github_url),
        scheme=parts.scheme,
        host=parts.hostname.lower(),
        port=port,
    )


def _check_host(host: str, original: str) -> None:
    """Only ASCII host names (or IP literals): curl turns a Unicode name into its punycode form
    before resolving it, so the name checked and pinned would not be the name connected to."""
    if _ip(host) is None and not _HOST_NAME.fullmatch(host.lower()):
        raise ToolError(
            f"repo_url {strip_url_credentials(original)!r} has a host name with characters other "
            "than ASCII letters, digits, '-' and '.'; give the punycode form (xn--...) instead"
        )


def _default_name(path: str, original: str) -> str:
    last = path.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    if last.endswith(".git"):
        last = last[: -len(".git")]
    if not is_valid_workspace_name(last):
        raise InvalidNameError(
            f"cannot derive a workspace name from {strip_url_credentials(original)!r}; "
            "pass workspace_name explicitly"
        )
    return last


# --- the allowlist ----------------------------------------------------------------------------


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class GitAllowlist:
    """``AGENTKIT_GIT_ALLOW`` parsed: see :mod:`agentkit.workspaces.urls`."""

    anywhere: bool
    public: bool
    hosts: frozenset[tuple[str, int | None]]
    suffixes: frozenset[str]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @classmethod
    def parse(cls, entries: Sequence[str]) -> GitAllowlist:
        anywhere = public = False
        hosts: set[tuple[str, int | None]] = set()
        suffixes: set[str] = set()
        networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for raw in entries:
            entry = raw.strip().lower()
            if entry == "*":
                anywhere = True
            elif entry == "public":
                public = True
            elif "/" in entry:
                try:
                    networks.append(ipaddress.ip_network(entry, strict=False))
                except ValueError:
                    raise ConfigError(
                        f"AGENTKIT_GIT_ALLOW: {raw!r} is not a CIDR range (like 10.0.0.0/8)"
                    ) from None
            elif _ip(entry) is not None:
                networks.append(ipaddress.ip_network(entry.strip("[]")))
            else:
                host, _, port_text = entry.partition(":")
                port = int(port_text) if port_text.isdigit() else None
                if (port_text and port is None) or not _HOST_ENTRY.fullmatch(host):
                    raise ConfigError(
                        f"AGENTKIT_GIT_ALLOW: {raw!r} is not 'public', '*', a host name, "
                        "'*.domain', host:port, an IP address or a CIDR range"
                    )
                if host.startswith("*."):
                    suffixes.add(host[1:])
                else:
                    hosts.add((host, port))
        return cls(anywhere, public, frozenset(hosts), frozenset(suffixes), tuple(networks))

    def names_host(self, host: str, port: int) -> bool:
        """Whether ``host`` (a name) is listed by name, wildcard or host:port."""
        return (
            (host, None) in self.hosts
            or (host, port) in self.hosts
            or any(host.endswith(suffix) for suffix in self.suffixes)
        )

    def lists_address(self, address: str) -> bool:
        ip = _ip(address)
        return ip is not None and any(ip in net for net in self.networks)


#: IPv6 ranges that carry or reach IPv4 addresses (6to4, NAT64, IPv4-compatible) or are
#: deprecated site-local: never taken as public, whatever ``is_global`` says.
_V6_NOT_PUBLIC = tuple(
    ipaddress.IPv6Network(net) for net in ("2002::/16", "64:ff9b::/96", "64:ff9b:1::/48", "::/96")
)
_V6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")


def _is_public(address: str) -> bool:
    ip = _ip(address)
    if ip is None:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip not in _V6_GLOBAL_UNICAST or any(ip in net for net in _V6_NOT_PUBLIC):
            return False
    return ip.is_global and not ip.is_multicast


async def check_destination(repo: RepoURL, settings: Settings, resolve: Resolver) -> CloneTarget:
    """Refuse a clone destination that ``AGENTKIT_GIT_ALLOW`` does not allow (see module docs).

    ``resolve(host)`` returns the addresses the agent host resolves ``host`` to.
    """
    allow = GitAllowlist.parse(settings.git_allow)
    if repo.scheme == "ssh" and not settings.git_ssh_host_keys:
        raise PermissionDeniedError(
            f"ssh clones ({repo.shown}) would log in with this host's own SSH keys; use the "
            "https URL (the token from GITHUB_TOKEN is used for the GitHub origin), or set "
            "AGENTKIT_GIT_SSH_HOST_KEYS=true to allow it"
        )
    github_origin = origin_of(github_web_url(settings))
    if allow.anywhere or (github_origin is not None and origin_of(repo.url) == github_origin):
        return CloneTarget(repo, (), ())
    literal = _ip(repo.host)
    if allow.names_host(repo.host, repo.port):
        return CloneTarget(repo, (), _no_redirects(repo))
    addresses = (str(literal),) if literal is not None else tuple(await resolve(repo.host))
    if not addresses:
        raise ToolError(f"cannot clone {repo.shown}: the host {repo.host!r} does not resolve")
    public_ok = allow.public and repo.scheme == "https" and repo.port == 443
    refused = [
        a for a in addresses if not (allow.lists_address(a) or (public_ok and _is_public(a)))
    ]
    if refused:
        why = (
            "only https on port 443 to public hosts is allowed by default"
            if repo.scheme != "https" or repo.port != 443
            else f"{repo.host} resolves to {', '.join(sorted(set(refused))[:3])}, which is not "
            "a public address"
        )
        raise PermissionDeniedError(
            f"cloning from {repo.shown} is not allowed: {why}. To allow it, add the host "
            f"({repo.host} or {repo.host}:{repo.port}) to AGENTKIT_GIT_ALLOW."
        )
    return CloneTarget(repo, addresses, (*_no_redirects(repo), *_pin(repo, addresses)))


def _no_redirects(repo: RepoURL) -> tuple[str, ...]:
    if repo.scheme not in ("http", "https"):
        return ()
    return ("-c", "http.followRedirects=false")


def _pin(repo: RepoURL, addresses: Sequence[str]) -> tuple[str, ...]:
    """git/curl connect to exactly the checked addresses (no second DNS answer)."""
    if repo.scheme not in ("http", "https") or _ip(repo.host) is not None:
        return ()
    shown = ",".join(f"[{a}]" if ":" in a else a for a in addresses)
    # no proxy either: a proxy would resolve the name itself, past the pin
    return ("-c", f"http.curloptResolve={repo.host}:{repo.port}:{shown}", "-c", "http.proxy=")


def parse_getent(output: str, limit: int = 32) -> list[str]:
    """Addresses from ``getent ahosts NAME`` output (first column, unique, at most ``limit``)."""
    seen: list[str] = []
    for line in output.splitlines()[: limit * 4]:
        first = line.split(maxsplit=1)[0] if line.strip() else ""
        if _ip(first) is not None and first not in seen:
            seen.append(first)
            if len(seen) >= limit:
                break
    return seen
