"""The constant shell script every git sandbox runs (see :mod:`agentkit.workspaces.sandbox`).

It is passed as ``sh -c SCRIPT agentkit-git MODE ARGS...``: every input (branch names, URLs,
commit shas) arrives as a positional argument and is only ever expanded inside double quotes;
the commit message is a file in the exchange folder (``/exchange/message``). Nothing is ever
interpolated into shell code.

Output is one line per *section* on stdout: ``@<name> <status> <base64 of at most LIMIT
bytes>``. Base64 keeps the framing intact whatever bytes git prints (the engine's log driver
mangles invalid UTF-8), so the controller parses it line by line, bounded. Everything the
script prints is still *untrusted*: code the workspace's configuration runs inside the sandbox
can print anything, so the controller only displays it or validates it before use.

Modes (``/workspace`` is the workspace, mounted alone; ``/exchange`` and ``/mirror`` only when
a mode needs them):

* ``info`` - the workspace's state (``report``: branch header, changed count, last commit);
* ``init URL`` - ``git init`` on branch ``main`` (``origin`` set to URL when given), then report;
* ``clone URL BRANCH DEPTH`` - clone ``/mirror`` (read-only) into the workspace, point its
  ``origin`` at URL (for the agent's eyes only: agentkit never reads it back), then report;
* ``branch NAME FROM`` - create NAME (at FROM when given) and switch to it, then report;
* ``commit TARGET KNOWN...`` - ``git add --all``, commit with ``/exchange/message`` if anything
  changed (hooks off, ``--no-verify``), then write ``/exchange/out.bundle`` holding ``HEAD``
  minus the KNOWN commits (tips of the controller's mirror) - or no bundle when a KNOWN commit
  already contains HEAD.
"""

from __future__ import annotations

__all__ = ["SCRIPT", "SECTION_LIMIT"]

#: bytes of one section's output the script keeps (the controller bounds it again)
SECTION_LIMIT = 1 << 20

SCRIPT = r"""set -u
LIMIT=__LIMIT__
out() { printf '@%s %s ' "$1" "$2"; head -c "$LIMIT" "$3" | base64 -w0; printf '\n'; }
say() { printf '%s' "$2" > /tmp/say; out "$1" "${3:-0}" /tmp/say; }
run() {
  name=$1; shift
  "$@" > /tmp/out 2> /tmp/err; rc=$?
  out "$name" "$rc" /tmp/out
  if [ "$rc" -ne 0 ]; then out "$name.err" "$rc" /tmp/err; fi
  return "$rc"
}
repo() {
  if [ -L .git ] || [ ! -d .git ] || ! git rev-parse --git-dir > /dev/null 2>&1; then
    say norepo '' 1; exit 0
  fi
}
report() {
  git status --porcelain=v2 --branch > /tmp/status 2> /tmp/err; rc=$?
  grep '^#' /tmp/status > /tmp/head
  out status "$rc" /tmp/head
  if [ "$rc" -ne 0 ]; then out status.err "$rc" /tmp/err; fi
  say changed "$(grep -vc '^#' /tmp/status)"
  git log -1 '--format=%H%x1f%s%x1f%cr%x1f%ct' > /tmp/out 2> /dev/null
  out last "$?" /tmp/out
}
cd /workspace || exit 90
mode=$1; shift
case $mode in
info)
  repo
  report
  ;;
init)
  run init git init --quiet . || exit 0
  git symbolic-ref HEAD refs/heads/main
  if [ -n "$1" ]; then run remote git remote add origin "$1" || exit 0; fi
  report
  ;;
clone)
  url=$1; branch=$2; depth=$3
  set -- clone --quiet --no-recurse-submodules
  if [ -n "$depth" ]; then set -- "$@" --depth "$depth"; fi
  if [ -n "$branch" ]; then set -- "$@" --branch "$branch"; fi
  run clone git "$@" -- file:///mirror . || exit 0
  run remote git remote set-url origin "$url" || exit 0
  report
  ;;
branch)
  repo
  name=$1; from=$2
  if git show-ref --verify --quiet "refs/heads/$name"; then say exists '' 1; exit 0; fi
  if [ -n "$from" ]; then
    sha=$(git rev-parse --verify --quiet --end-of-options "$from^{commit}")
    if [ -z "$sha" ]; then say badref '' 1; exit 0; fi
    run switch git switch --quiet --create "$name" "$sha" || exit 0
  else
    run switch git switch --quiet --create "$name" || exit 0
  fi
  report
  ;;
commit)
  repo
  target=$1; shift
  cur=$(git symbolic-ref --quiet --short HEAD 2> /dev/null)
  say branch "$cur"
  if [ -z "$target" ]; then target=$cur; fi
  if [ -z "$target" ]; then say detached '' 1; exit 0; fi
  run add git add --all || exit 0
  git diff --cached --quiet 2> /tmp/err; rc=$?
  committed=0
  if [ "$rc" -eq 1 ]; then
    run commit git commit --quiet --no-verify --file=/exchange/message || exit 0
    committed=1
  elif [ "$rc" -ne 0 ]; then
    out diff "$rc" /tmp/err; exit 0
  fi
  say committed "$committed"
  git log -1 '--format=%H%x1f%s%x1f%cr%x1f%ct' > /tmp/out 2> /dev/null; rc=$?
  out last "$rc" /tmp/out
  if [ "$rc" -ne 0 ]; then exit 0; fi
  head=$(git rev-parse --verify --quiet HEAD)
  say head "$head"
  if [ -n "$cur" ] && [ "$target" = "$cur" ]; then
    git config "branch.$cur.remote" origin && git config "branch.$cur.merge" "refs/heads/$target"
  fi
  excl=''
  for sha in "$@"; do
    case $sha in ''|*[!0-9a-f]*) continue ;; esac
    git cat-file -e "$sha^{commit}" 2> /dev/null || continue
    if git merge-base --is-ancestor "$head" "$sha" 2> /dev/null; then say known "$sha"; exit 0; fi
    excl="$excl ^$sha"
  done
  # $excl holds only validated hex object names: word splitting is intended
  run bundle git bundle create --quiet /exchange/out.bundle HEAD $excl
  ;;
*)
  echo "unknown mode $mode" >&2; exit 2
  ;;
esac
""".replace("__LIMIT__", str(SECTION_LIMIT))
