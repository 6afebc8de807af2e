#!/usr/bin/env bash
# Forms a Causeway cluster once: waits until one of the voters answers, then runs
# `causeway cluster init` with all of them, unless the cluster was formed before. Running it
# again (a restarted compose project, a re-applied Kubernetes Job, local-cluster.sh after a
# crash) leaves a formed cluster as it is, so every deployment calls it unconditionally.
#
#   cluster-init.sh 1=node1:7420 2=node2:7420 3=node3:7420
#
# The image installs it as `causeway-cluster-init`. Environment: CAUSEWAY (the CLI, default
# `causeway`), INIT_WAIT_S (how long to wait for a node to answer, default 120).
set -euo pipefail

if [ "$#" -eq 0 ]; then
    echo "usage: $0 ID=HOST:PORT..." >&2
    exit 2
fi
causeway="${CAUSEWAY:-causeway}"
wait_s="${INIT_WAIT_S:-120}"

servers=""
voter_flags=()
for voter in "$@"; do
    servers="${servers:+${servers},}${voter#*=}"
    voter_flags+=(--voter "${voter}")
done

# A formed cluster has an id (a UUID); a node waiting to be initialised reports an empty one.
formed() {
    "${causeway}" --server "${servers}" --output json cluster status 2>/dev/null \
        | grep -q '"cluster_id": *"[0-9a-f]'
}

deadline=$((SECONDS + wait_s))
until "${causeway}" --server "${servers}" cluster status > /dev/null 2>&1; do
    if [ "${SECONDS}" -ge "${deadline}" ]; then
        echo "no node of ${servers} answered within ${wait_s} s" >&2
        exit 1
    fi
    sleep 1
done

if formed; then
    echo "the cluster was formed before; nothing to do"
    exit 0
fi
if ! "${causeway}" --server "${servers}" cluster init "${voter_flags[@]}"; then
    # Another init (a second run of this script) may have formed it in the meantime.
    if formed; then
        echo "the cluster was formed by another init; nothing to do"
        exit 0
    fi
    exit 1
fi
