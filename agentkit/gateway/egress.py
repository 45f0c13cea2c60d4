"""The egress allowlist: which hosts agents may reach through the gateway's forward proxy.

Agents sit on an internal Docker network: their only way out is the gateway. Model requests go
to the gateway's API port; everything else (git over HTTPS, npm, pip, curl) goes through
``HTTP(S)_PROXY`` = Debian's squid in the gateway container, configured here from
``AGENTKIT_EGRESS_ALLOW``:

* ``example.com`` - exactly that host; ``.example.com`` or ``*.example.com`` - it and its
  subdomains; an IP address - that address;
* the group names ``git`` (the host of ``AGENTKIT_GITHUB_URL``), ``npm``, ``pypi`` and
  ``debian`` (their public registries, or the registry the controller's ``NPM_CONFIG_REGISTRY``
  / ``PIP_INDEX_URL`` points at) - the default is ``git,npm,pypi,debian``;
* ``host:port`` - that host on that port only (otherwise only ports 80, and 443 for TLS);
* ``*`` - any public host (private, loopback and link-local addresses stay refused unless
  listed by name).

squid serves only clients that log in with their run's credentials: agents get
``HTTP(S)_PROXY=http://<run id>:<token>@<gateway>:3128`` and squid checks the pair through an
auth helper (:mod:`.proxy_auth`) against the gateway's live tokens, so a run that ended (or a
client without a token) is refused with 407 however its address was reused. Every request squid
sees is logged to the gateway over loopback TCP (:func:`parse_access_line`) with the run id as
the user name (never the token); refused ones are recorded under that run. Standard library
only: this module also runs inside the gateway container.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = [
    "AUTH_REALM",
    "DEFAULT_ALLOW",
    "AccessLine",
    "expand_allowlist",
    "parse_access_line",
    "squid_config",
]

#: the default of AGENTKIT_EGRESS_ALLOW: group names, expanded by :func:`expand_allowlist`
DEFAULT_ALLOW = "git,npm,pypi,debian"

#: connections one agent (client address) may hold open to squid at once
MAX_CONNECTIONS_PER_CLIENT = 64
#: the realm squid names in its 407 challenge
AUTH_REALM = "agentkit gateway (log in as <run id>:<run token>)"
#: seconds squid trusts a checked login before it asks the gateway again
AUTH_RECHECK_S = 1
#: auth helpers squid may run at once (each holds one connection to the gateway)
AUTH_CHILDREN = 8
_RUN_USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")

# The public registries behind the group names (used when the controller names no mirror).
_GROUPS: dict[str, tuple[str, ...]] = {
    "npm": ("registry.npmjs.org",),
    "pypi": ("pypi.org", "files.pythonhosted.org"),
    "debian": ("deb.debian.org", "security.debian.org"),
}
_MIRROR_VARS = {"npm": ("NPM_CONFIG_REGISTRY",), "pypi": ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL")}
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?")
_PRIVATE = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "0.0.0.0/8",
    "::1",
    "fc00::/7",
    "fe80::/10",
)


def _host_of(url: str) -> str | None:
    try:
        host = urlsplit(url if "//" in url else f"//{url}").hostname
    except ValueError:
        return None
    return host.lower() if host else None


def _port_of(url: str) -> int | None:
    try:
        return urlsplit(url if "//" in url else f"//{url}").port
    except ValueError:
        return None


def _is_host(item: str) -> bool:
    """A host name, or ``.domain`` (it and its subdomains); checked label by label."""
    name = item[1:] if item.startswith(".") else item
    labels = name.split(".")
    return 0 < len(name) <= 253 and all(
        len(label) <= 63 and _LABEL.fullmatch(label) for label in labels
    )


def expand_allowlist(
    spec: str | Sequence[str],
    *,
    git_url: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[str]:
    """``AGENTKIT_EGRESS_ALLOW`` -> the hosts (and ``*``) squid allows; ``ValueError`` if bad."""
    env = os.environ if environ is None else environ
    items = [p.strip().lower() for p in (spec.split(",") if isinstance(spec, str) else spec)]
    out: list[str] = []
    for item in (i for i in items if i):
        if item == "*":
            out.append("*")
        elif item == "git":
            host = _host_of(git_url or "https://github.com")
            port = _port_of(git_url or "https://github.com")
            if host:
                out.append(host if port in (None, 80, 443) else f"{host}:{port}")
        elif item in _GROUPS:
            mirrors = [
                h
                for var in _MIRROR_VARS.get(item, ())
                for h in [_host_of(v) for v in env.get(var, "").split()]
                if h
            ]
            out.extend(mirrors or _GROUPS[item])
        else:
            port = None
            head, sep, tail = item.rpartition(":")
            if sep and head.count(":") == 0:  # host:port (an IPv6 address has more colons)
                if not tail.isdigit() or not 0 < int(tail) < 65536:
                    raise ValueError(f"AGENTKIT_EGRESS_ALLOW: {item!r} has a bad port")
                item, port = head, int(tail)
            if item.startswith("*."):
                item = item[1:]
            try:
                ipaddress.ip_address(item)
            except ValueError:
                if not _is_host(item):
                    raise ValueError(
                        f"AGENTKIT_EGRESS_ALLOW: {item!r} is not a host name, .domain, IP "
                        "address, group (git, npm, pypi, debian) or *"
                    ) from None
            out.append(item if port in (None, 80, 443) else f"{item}:{port}")
    return list(dict.fromkeys(out))


def squid_config(
    allow: Iterable[str],
    *,
    port: int,
    log_port: int,
    own_names: Iterable[str] = (),
    clients: Iterable[str] = (),
    auth_helper: Sequence[str] | None = None,
) -> str:
    """squid.conf for the gateway: listed hosts allowed, everything else refused and logged.

    ``auth_helper`` (the argv of :mod:`.proxy_auth`'s helper) makes squid demand the run's
    credentials (Basic proxy auth) before anything else is looked at, checked against the
    gateway at most a second before (``credentialsttl 1``: a token dies in squid when its run
    ends, give or take that second).
    """
    allow = list(allow)
    with_port = [h.rpartition(":") for h in allow if h.count(":") == 1]
    hosts = [h for h in allow if h != "*" and h.count(":") != 1]
    open_all = "*" in allow
    # squid refuses a dstdomain list holding both a domain and its subdomain form
    covered = {h for h in hosts if not h.startswith(".") and f".{h}" in hosts}
    domains = sorted(set(hosts) - covered)
    lines = [
        "# generated by agentkit.gateway.egress: do not edit",
        f"http_port {int(port)}",
        "visible_hostname agentkit-gateway",
        "pid_filename none",
        "cache deny all",
        "cache_mem 8 MB",
        "coredump_dir none",
        "shutdown_lifetime 1 seconds",
        "logfile_rotate 0",
        "cache_log stdio:/dev/stderr",
        # %un: the run id the client logged in as ("-" if none); the password is never logged
        "logformat agentkit %ts.%03tu %>a %un %Ss/%03>Hs %rm %ru",
        # to the gateway's log receiver on loopback (squid runs as another user than the
        # gateway, so it cannot reopen the gateway's stdout)
        f"access_log tcp://127.0.0.1:{int(log_port)} logformat=agentkit",
        "buffered_logs off",
        "via off",
        "forwarded_for delete",
        "httpd_suppress_version_string on",
        "pinger_enable off",
        # plain HTTP on 80, TLS tunnels (CONNECT) to 443; other ports only as host:port entries
        "acl SSL_ports port 443",
        "acl Safe_ports port 80 443",
        # one agent cannot hold all of squid's descriptors, nor keep half-sent requests open
        f"client_ip_max_connections {MAX_CONNECTIONS_PER_CLIENT}",
        "request_timeout 60 seconds",
    ]
    sources = sorted(set(clients))
    if sources:  # only the agents' internal network may use the proxy
        lines += [f"acl agents src {' '.join(sources)}", "http_access deny !agents"]
    if auth_helper is not None:
        for arg in auth_helper:
            if not arg or any(c.isspace() for c in arg):
                raise ValueError(f"auth helper argument {arg!r}: empty or holds white space")
        lines += [
            f"auth_param basic program {' '.join(auth_helper)}",
            f"auth_param basic children {AUTH_CHILDREN} startup=1 idle=1",
            f"auth_param basic realm {AUTH_REALM}",
            # squid would trust a checked login for 2 h by default: ask the gateway again after
            # a second (0 makes squid 5 re-ask forever: it never counts a login as checked)
            f"auth_param basic credentialsttl {AUTH_RECHECK_S} seconds",
            "auth_param basic casesensitive on",
            "acl run_login proxy_auth REQUIRED",
            # before any name is looked at: without a live run's login, nothing (no DNS either)
            "http_access deny !run_login",
        ]
    own = sorted(set(own_names))
    if own:  # the gateway itself (the model API) is reached directly, never through squid
        lines += [f"acl gateway_self dstdomain -n {' '.join(own)}", "http_access deny gateway_self"]
    for i, (host, _, host_port) in enumerate(sorted(with_port)):
        lines += [
            f"acl allowed_host{i} dstdomain -n {host}",
            f"acl allowed_port{i} port {int(host_port)}",
            f"http_access allow allowed_host{i} allowed_port{i}",
        ]
    lines += ["http_access deny CONNECT !SSL_ports", "http_access deny !Safe_ports"]
    if domains:
        lines += [f"acl allowed dstdomain -n {' '.join(domains)}", "http_access allow allowed"]
    if open_all:
        # a dst ACL makes squid resolve the name: only in * mode, where every name is resolved
        # to be fetched anyway; with a list, a refused name is never looked up (no DNS leak)
        lines += [
            f"acl private_dst dst {' '.join(_PRIVATE)}",
            "http_access deny private_dst",
            "http_access allow all",
        ]
    else:
        lines.append("http_access deny all")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class AccessLine:
    """One request squid handled."""

    at: float
    client: str
    user: str | None  # the run id the request logged in as (None: no valid login)
    result: str  # e.g. TCP_DENIED/403, TCP_TUNNEL/200
    method: str
    target: str

    @property
    def refused(self) -> bool:
        return "DENIED" in self.result or self.result.endswith(("/403", "/407"))

    @property
    def run_id(self) -> str | None:
        """The run the request belongs to: its login, unless squid refused that login (407)."""
        if self.user is None or self.result.endswith("/407"):
            return None
        return self.user


def parse_access_line(line: str) -> AccessLine | None:
    """Parse a line of the ``agentkit`` log format; ``None`` for anything else."""
    parts = line[:4096].split(" ")
    if len(parts) != 6:
        return None
    stamp, client, user, result, method, target = parts
    try:
        at = float(stamp)
    except ValueError:
        return None
    login = user if _RUN_USER.fullmatch(user) else None
    return AccessLine(at, client[:64], login, result[:64], method[:20], target[:500])
