#!/bin/sh
# agentkit-forward: the gateway's socket transport inside an agent container, then "$@".
#
# An agent behind the gateway's socket transport has no network at all (NetworkMode none: only
# its own loopback). The gateway serves the run's model API and egress proxy as two unix
# sockets in a folder mounted read-only at $AGENTKIT_GATEWAY_SOCKETS:
#   api.sock     the gateway's model API (ANTHROPIC_BASE_URL=http://127.0.0.1:$AGENTKIT_GATEWAY_API_PORT)
#   proxy.sock   squid, the egress allowlist proxy (HTTP(S)_PROXY=http://<run>:<token>@127.0.0.1:$AGENTKIT_GATEWAY_PROXY_PORT)
# This script serves each on the container's loopback with socat (one process per connection;
# nodelay: without it Nagle's algorithm holds a streamed answer's later chunks for the client's
# delayed ACK, ~40 ms each),
# waits until both listen, then runs "$@" (the image's entrypoint or the spawn's own) in its
# place. Without AGENTKIT_GATEWAY_SOCKETS it only runs "$@".
#
# Nothing here is evaluated from input: the folder and ports come from the container spec the
# controller wrote; a port must be digits only.
set -eu

die() {
    echo "agentkit-forward: $1" >&2
    exit 2
}

[ "$#" -ge 1 ] || die "usage: agentkit-forward COMMAND [ARG]..."
dir="${AGENTKIT_GATEWAY_SOCKETS:-}"
[ -n "$dir" ] || exec "$@"
command -v socat >/dev/null 2>&1 || die "socat is missing: this image predates the socket transport (rebuild it: agentkit image build)"
api_port="${AGENTKIT_GATEWAY_API_PORT:-8080}"
proxy_port="${AGENTKIT_GATEWAY_PROXY_PORT:-3128}"
# socat reads options after a comma or colon in an address: the folder is a plain path
case "$dir" in
    /*) ;;
    *) die "AGENTKIT_GATEWAY_SOCKETS must be an absolute path" ;;
esac
case "$dir" in
    *[!A-Za-z0-9/_.-]*) die "AGENTKIT_GATEWAY_SOCKETS may hold letters, digits, /, _, . and - only" ;;
esac
for port in "$api_port" "$proxy_port"; do
    case "$port" in
        "" | *[!0-9]*) die "ports must be digits only" ;;
    esac
done

for pair in "$api_port api.sock" "$proxy_port proxy.sock"; do
    port="${pair% *}"
    sock="${pair#* }"
    socat "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork,nodelay" "UNIX-CONNECT:$dir/$sock" </dev/null &
done

# both listen before the agent runs (a listening socket shows as state 0A in /proc/net/tcp)
hex() { printf '%04X' "$1"; }
want_api=":$(hex "$api_port") 00000000:0000 0A"
want_proxy=":$(hex "$proxy_port") 00000000:0000 0A"
tries=0
until grep -q "$want_api" /proc/net/tcp && grep -q "$want_proxy" /proc/net/tcp; do
    tries=$((tries + 1))
    [ "$tries" -le 500 ] || die "the forwarders did not listen within 5 s"
    sleep 0.01
done
exec "$@"
