#!/usr/bin/env bash
# One node's part of deploy/slurm/anneal-agents.sbatch (run by srun, one task per node).
#   anneal-agent-step.sh run     start anneal-agent for this node and wait for it
#   anneal-agent-step.sh drain [signal|evicted]
#                                ranks checkpoint and stop, then the agent stops (SIGTERM); returns when it has
#                                exited. signal (default): SIGUSR1 (the trainer's preemption signal) to the ranks
#                                from here; evicted: the coordinator already preempted them (`anneal drain
#                                --evict`): only wait for them
set -uo pipefail
node="${SLURMD_NODENAME:?not inside a Slurm step}-slurm${SLURM_JOB_ID:?}"
work="${ANNEAL_WORK_ROOT:-/tmp/anneal-slurm}/$SLURM_JOB_ID/$SLURMD_NODENAME"
pidfile="$work/agent.pid"

case "${1:-}" in
  run)
    mkdir -p "$work"
    chmod 755 "$work" "$(dirname "$work")" "$(dirname "$(dirname "$work")")" 2>/dev/null || true
    args=(--coordinator "${ANNEAL_COORDINATOR:?}" --node "$node" --work-dir "$work"
          --server-key-file "${ANNEAL_SERVER_KEY_FILE:?}" --join-token-file "${ANNEAL_JOIN_TOKEN_FILE:?}"
          --label "slurm_job=$SLURM_JOB_ID" --label "slurm_node=$SLURMD_NODENAME")
    [ -n "${ANNEAL_SLOTS:-}" ] && args+=(--slots "$ANNEAL_SLOTS")
    # shellcheck disable=SC2206
    extra=(${ANNEAL_AGENT_ARGS:-})
    # Its own session: a signal Slurm sends the step's process group reaches this script, not the agent.
    setsid "${ANNEAL_AGENT:-anneal-agent}" "${args[@]}" "${extra[@]}" >>"$work/agent.log" 2>&1 &
    agent=$!
    echo "$agent" > "$pidfile"
    echo "anneal-agents: $node: agent pid $agent (log $work/agent.log)"
    trap 'kill -TERM "$agent" 2>/dev/null' TERM INT
    status=0
    # A trapped signal interrupts wait while the agent still runs: wait again until it has exited.
    while kill -0 "$agent" 2>/dev/null; do wait "$agent"; status=$?; done
    rm -f "$pidfile"
    echo "anneal-agents: $node: agent exited ($status)"
    exit "$status"
    ;;
  drain)
    [ -f "$pidfile" ] || { echo "anneal-agents: $node: no agent running"; exit 0; }
    agent="$(cat "$pidfile")"
    grace="${ANNEAL_DRAIN_GRACE_S:-240}"
    # The ranks are the agent's children (each in its own session).
    ranks=$(pgrep -P "$agent" | tr '\n' ' ')
    if [ "${2:-signal}" = evicted ]; then
      echo "anneal-agents: $node: ranks [${ranks}] preempted by the coordinator, up to ${grace} s to checkpoint"
    else
      # shellcheck disable=SC2086
      [ -n "$ranks" ] && kill -USR1 $ranks 2>/dev/null
      echo "anneal-agents: $node: SIGUSR1 to ranks [${ranks}], up to ${grace} s to checkpoint"
    fi
    deadline=$((SECONDS + grace))
    if [ "${2:-signal}" = evicted ]; then
      # A job still starting when the drain came was not preempted: halfway through, its ranks get SIGUSR1 too.
      while [ -n "$(pgrep -P "$agent")" ] && ((SECONDS < deadline - grace / 2)); do sleep 0.5; done
      left=$(pgrep -P "$agent" | tr '\n' ' ')
      # shellcheck disable=SC2086
      [ -n "$left" ] && kill -USR1 $left 2>/dev/null && echo "anneal-agents: $node: SIGUSR1 to ranks [${left}] still running"
    fi
    while [ -n "$(pgrep -P "$agent")" ] && ((SECONDS < deadline)); do sleep 0.5; done
    kill -TERM "$agent" 2>/dev/null
    while kill -0 "$agent" 2>/dev/null; do sleep 0.2; done
    echo "anneal-agents: $node: drained"
    ;;
  *) echo "usage: anneal-agent-step.sh run|drain" >&2; exit 2 ;;
esac
