#!/usr/bin/env bash
# Starts a three-node Causeway cluster on this machine, for trying replication and for tests:
# node N serves gRPC on 127.0.0.N:${CAUSEWAY_PORT:-7420} and its admin HTTP (/metrics,
# /healthz, /readyz) on 127.0.0.N:${CAUSEWAY_ADMIN_PORT:-7421}, with its data in
# ${CLUSTER_DIR}/node-N and its log in ${CLUSTER_DIR}/node-N.log. Then forms the cluster with
# all three as voters (deploy/cluster-init.sh, which leaves a formed cluster as it is) and
# prints the status. Nothing else is needed: the whole of 127/8 is loopback.
#
#   deploy/local-cluster.sh            # build, start what is not running, initialise, status
#   deploy/local-cluster.sh stop       # stop the three nodes (SIGTERM)
#
# Run again after a node was killed, it starts that node alone; the others keep running.
#
# Environment: CLUSTER_DIR (default ./causeway-cluster), CAUSEWAY_PORT (default 7420),
# CAUSEWAY_ADMIN_PORT (default 7421), PROFILE (debug or release, default release), CAUSEWAYD and CAUSEWAY (binaries to use
# instead of building), START_WAIT_SECS (how long a starting node may take to open its store
# before the script gives up on it, leaving it running; default 300).
set -euo pipefail
cd "$(dirname "$0")/.."

cluster_dir="${CLUSTER_DIR:-./causeway-cluster}"
port="${CAUSEWAY_PORT:-7420}"
admin_port="${CAUSEWAY_ADMIN_PORT:-7421}"
profile="${PROFILE:-release}"
servers="127.0.0.1:${port},127.0.0.2:${port},127.0.0.3:${port}"

# Whether process $1 is node $2's causewayd and runs: a killed node not yet reaped by its
# parent is a zombie, and its pid may since belong to another process.
alive() {
    local state
    state="$(ps -o stat=,args= -p "$1" 2>/dev/null)" || return 1
    case "${state}" in
        Z*) return 1 ;;
        *"--node-id $2 "*) return 0 ;;
        *) return 1 ;;
    esac
}

stop() {
    for n in 1 2 3; do
        pid_file="${cluster_dir}/node-${n}.pid"
        if [ -f "${pid_file}" ]; then
            # Only node N's own process: the pid may since belong to another.
            if alive "$(cat "${pid_file}")" "${n}"; then
                kill "$(cat "${pid_file}")" 2>/dev/null || true
            fi
            rm -f "${pid_file}"
        fi
    done
}

if [ "${1:-start}" = "stop" ]; then
    stop
    echo "stopped"
    exit 0
fi

if [ -z "${CAUSEWAYD:-}" ] || [ -z "${CAUSEWAY:-}" ]; then
    flag=""
    if [ "${profile}" = "release" ]; then flag="--release"; fi
    cargo build ${flag} --bin causewayd --bin causeway
    CAUSEWAYD="${CAUSEWAYD:-./target/${profile}/causewayd}"
    CAUSEWAY="${CAUSEWAY:-./target/${profile}/causeway}"
fi

mkdir -p "${cluster_dir}"
started=()
for n in 1 2 3; do
    pid_file="${cluster_dir}/node-${n}.pid"
    if [ -f "${pid_file}" ] && alive "$(cat "${pid_file}")" "${n}"; then
        echo "node ${n} is running (pid $(cat "${pid_file}"))"
        continue
    fi
    # The log is appended to, so a restart keeps what the node said before it went down.
    # "listening on" is looked for in what this start prints only.
    "${CAUSEWAYD}" --node-id "${n}" --listen "127.0.0.${n}:${port}" \
        --admin-listen "127.0.0.${n}:${admin_port}" \
        --data-dir "${cluster_dir}/node-${n}" \
        > "${cluster_dir}/node-${n}.out" 2>> "${cluster_dir}/node-${n}.log" &
    echo $! > "${pid_file}"
    started+=("${n}")
    echo "node ${n} started (pid $!)"
done

# Each node prints "listening on ADDR" once it serves; one with a large store takes a while
# to open it. A node that exits is reported; the others are left running either way.
start_wait="${START_WAIT_SECS:-300}"
for n in "${started[@]}"; do
    pid="$(cat "${cluster_dir}/node-${n}.pid")"
    waited=0
    until grep -q "^listening on" "${cluster_dir}/node-${n}.out" 2>/dev/null; do
        if ! alive "${pid}" "${n}"; then
            echo "node ${n} exited while starting; the end of its log:"
            tail -n 20 "${cluster_dir}/node-${n}.log"
            rm -f "${cluster_dir}/node-${n}.pid"
            exit 1
        fi
        if [ "${waited}" -ge "$((start_wait * 10))" ]; then
            echo "node ${n} (pid ${pid}) is still opening its store after ${start_wait} s;" \
                "it keeps running: see ${cluster_dir}/node-${n}.log, then run $0 again"
            exit 1
        fi
        if [ "${waited}" -gt 0 ] && [ "$((waited % 100))" -eq 0 ]; then
            echo "node ${n} is opening its store ($((waited / 10)) s)"
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
done

CAUSEWAY="${CAUSEWAY}" deploy/cluster-init.sh \
    "1=127.0.0.1:${port}" "2=127.0.0.2:${port}" "3=127.0.0.3:${port}"
sleep 1
"${CAUSEWAY}" --server "${servers}" cluster status
echo
echo "servers: ${servers}   (export CAUSEWAY_SERVER=${servers})"
echo "stop with: $0 stop"
