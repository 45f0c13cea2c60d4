#!/bin/sh
# agentkit agent entrypoint: run one Claude Code task headless and stream its events as JSON lines.
#
# This script is constant: the task is only ever passed to claude as one argument ("$task"),
# never evaluated, interpolated into code, or split.
#
# Environment (set by the runtime in the container-create request):
#   AGENTKIT_TASK         the task text (UTF-8, any bytes except NUL), or
#   AGENTKIT_TASK_FILE    a path inside the container to read the task from (wins over
#                         AGENTKIT_TASK; trailing newlines are dropped); with neither, the
#                         first argument is the task.
#   AGENTKIT_DEADLINE     optional unix time (seconds): claude gets SIGTERM at that moment and
#                         SIGKILL 10 s later; the container then exits with status 124.
#                         A deadline already past exits 124 at once.
#   AGENTKIT_MAX_TURNS    optional positive integer -> --max-turns
#   AGENTKIT_MODEL        optional model name -> --model
#   ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL, ...   read by claude itself.
#
# stdout: claude's stream-json events, one per line. stderr: claude's diagnostics and ours,
# prefixed "agentkit-entrypoint:". Exit status: claude's, 124 on deadline, 2 on bad input.
set -eu

die() {
    echo "agentkit-entrypoint: $2" >&2
    exit "$1"
}

if [ -n "${AGENTKIT_TASK_FILE:-}" ]; then
    [ -r "$AGENTKIT_TASK_FILE" ] || die 2 "AGENTKIT_TASK_FILE is not readable: $AGENTKIT_TASK_FILE"
    task="$(cat -- "$AGENTKIT_TASK_FILE")"
elif [ -n "${AGENTKIT_TASK:-}" ]; then
    task="$AGENTKIT_TASK"
elif [ "$#" -ge 1 ]; then
    task="$1"
else
    die 2 "no task: set AGENTKIT_TASK or AGENTKIT_TASK_FILE"
fi
[ -n "$task" ] || die 2 "the task is empty"
# The task now lives in $task only; do not leave it in the environment of the tools claude runs.
unset AGENTKIT_TASK

set -- claude -p --verbose --output-format stream-json --dangerously-skip-permissions

if [ -n "${AGENTKIT_MAX_TURNS:-}" ]; then
    case "$AGENTKIT_MAX_TURNS" in
        *[!0-9]* | 0*) die 2 "AGENTKIT_MAX_TURNS must be a positive integer" ;;
    esac
    set -- "$@" --max-turns "$AGENTKIT_MAX_TURNS"
fi
if [ -n "${AGENTKIT_MODEL:-}" ]; then
    set -- "$@" --model "$AGENTKIT_MODEL"
fi
# "--" ends the options: a task starting with "-" stays the prompt.
set -- "$@" -- "$task"

if [ -n "${AGENTKIT_DEADLINE:-}" ]; then
    case "$AGENTKIT_DEADLINE" in
        "" | *[!0-9]* | 0*) die 2 "AGENTKIT_DEADLINE must be unix seconds (digits only)" ;;
    esac
    remaining=$((AGENTKIT_DEADLINE - $(date +%s)))
    if [ "$remaining" -le 0 ]; then
        die 124 "deadline already passed"
    fi
    exec timeout --signal=TERM --kill-after=10 "$remaining" "$@" </dev/null
fi
exec "$@" </dev/null
