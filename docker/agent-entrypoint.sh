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
#   AGENTKIT_SESSION      "1": session mode (see below); otherwise one headless task, stdin unused
#   AGENTKIT_RESUME       session mode: a saved session id to resume (--resume)
#   AGENTKIT_ASK          session mode: permission rules (one per line, e.g. "Bash(git push:*)")
#                         whose tool calls ask the controller first (can_use_tool requests);
#                         everything else runs free as before
#
# Session mode: claude reads stream-json from stdin (--input-format stream-json) and replays
# each user message it takes (--replay-user-messages). The first user message is the task,
# written here; then every line the controller writes to the container's stdin is passed on
# (user messages, control requests and responses), until the line
#   {"type":"agentkit_end_input"}
# or the end of stdin: claude's input is then closed, it finishes what it was given and exits.
# This is the end-of-conversation rule: the controller writes that line once the agent has
# answered (a result) with no message or approval pending, so a run still ends by itself.
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

set -- claude -p --verbose --output-format stream-json
session=""
if [ "${AGENTKIT_SESSION:-}" = 1 ]; then
    session=1
    set -- "$@" --input-format stream-json --replay-user-messages
    if [ -n "${AGENTKIT_ASK:-}" ]; then
        ask_settings="$(printf '%s\n' "$AGENTKIT_ASK" | jq -Rnc '{permissions: {ask: [inputs | select(length > 0)]}}')" \
            || die 2 "AGENTKIT_ASK could not be read"
        set -- "$@" --permission-mode default --permission-prompt-tool stdio --settings "$ask_settings"
    else
        set -- "$@" --dangerously-skip-permissions
    fi
    if [ -n "${AGENTKIT_RESUME:-}" ]; then
        case "$AGENTKIT_RESUME" in
            *[!0-9a-zA-Z-]*) die 2 "AGENTKIT_RESUME must be a session id" ;;
        esac
        set -- "$@" --resume "$AGENTKIT_RESUME"
    fi
else
    set -- "$@" --dangerously-skip-permissions
fi

if [ -n "${AGENTKIT_MAX_TURNS:-}" ]; then
    case "$AGENTKIT_MAX_TURNS" in
        *[!0-9]* | 0*) die 2 "AGENTKIT_MAX_TURNS must be a positive integer" ;;
    esac
    set -- "$@" --max-turns "$AGENTKIT_MAX_TURNS"
fi
if [ -n "${AGENTKIT_MODEL:-}" ]; then
    set -- "$@" --model "$AGENTKIT_MODEL"
fi
if [ -z "$session" ]; then
    # "--" ends the options: a task starting with "-" stays the prompt.
    set -- "$@" -- "$task"
fi

if [ -n "${AGENTKIT_DEADLINE:-}" ]; then
    case "$AGENTKIT_DEADLINE" in
        "" | *[!0-9]* | 0*) die 2 "AGENTKIT_DEADLINE must be unix seconds (digits only)" ;;
    esac
    remaining=$((AGENTKIT_DEADLINE - $(date +%s)))
    if [ "$remaining" -le 0 ]; then
        die 124 "deadline already passed"
    fi
    set -- timeout --signal=TERM --kill-after=10 "$remaining" "$@"
fi
[ -n "$session" ] || exec "$@" </dev/null

# Session mode: the task as the first stream-json user message, then the container's stdin.
first="$(jq -nc --arg t "$task" '{type: "user", message: {role: "user", content: $t}, parent_tool_use_id: null, session_id: ""}')" \
    || die 2 "the task could not be encoded"
unset task
fifo="$(mktemp -u /tmp/agentkit-input.XXXXXX)"
mkfifo -m 600 "$fifo"
exec 3<&0
{
    printf '%s\n' "$first"
    while IFS= read -r line; do
        [ "$line" = '{"type":"agentkit_end_input"}' ] && break
        printf '%s\n' "$line"
    done
} <&3 >"$fifo" &
feeder=$!
"$@" <"$fifo" 3<&- &
agent=$!
trap 'kill -TERM "$agent" 2>/dev/null' TERM INT
status=0
wait "$agent" || status=$?
# wait returns early (>128) when a trapped signal arrives: wait for the agent itself
while kill -0 "$agent" 2>/dev/null; do wait "$agent" || status=$?; done
kill "$feeder" 2>/dev/null || true
exit "$status"
