#!/usr/bin/env python3
"""Single node against a three-node cluster, side by side on this machine.

Each round runs, for each workload, a fresh single node and then a fresh three-node cluster
(node N on 127.0.0.N), so both see the same machine weather; `causeway bench` drives each
(the cluster through its leader). Then, per round, a failover: with a writer appending every
few milliseconds, the leader is killed with SIGKILL and the time to the first write
acknowledged by the new leader is measured. Prints one line per run and a summary table (the
median of the rounds) in Markdown, for docs/BENCHMARKS.md.

    python3 bench/cluster.py [--rounds 3] [--seconds 10] [--bin target/release]

Uses the release binaries (build them first: cargo build --release). Scratch data goes to a
temporary directory that is removed at the end.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

WORKLOADS = [
    ("1 event/request, 16 in flight", ["--in-flight", "16", "--events-per-request", "1"]),
    ("100 events/request, 16 in flight", ["--in-flight", "16", "--events-per-request", "100"]),
]


def free_port(ip):
    with socket.socket() as sock:
        sock.bind((ip, 0))
        return sock.getsockname()[1]


class Node:
    def __init__(self, binary, data_dir, listen, node_id=None):
        self.listen = listen
        args = [binary, "--listen", listen, "--admin-listen", "off", "--data-dir", data_dir]
        if node_id is not None:
            args += ["--node-id", str(node_id)]
        self.log = open(data_dir + ".log", "w")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("listening on"):
            raise SystemExit(f"causewayd on {listen} did not start: {line!r}")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def causeway(bin_dir, server, *args, check=True, timeout=120):
    result = subprocess.run(
        [os.path.join(bin_dir, "causeway"), "--server", server, *args],
        capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise SystemExit(f"causeway {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def leader_of(bin_dir, servers):
    deadline = time.time() + 30
    while time.time() < deadline:
        for server in servers:
            result = causeway(bin_dir, server, "--output", "json", "cluster", "status",
                              check=False, timeout=10)
            if result.returncode == 0:
                try:
                    status = json.loads(result.stdout)
                except json.JSONDecodeError:
                    continue
                nodes = status.get("members", [])
                for node in nodes:
                    if node.get("role") in ("leader", "LEADER", "NODE_ROLE_LEADER"):
                        return node.get("address") or server
        time.sleep(0.2)
    raise SystemExit("no leader within 30 s")


def start_cluster(bin_dir, scratch, tag):
    port = free_port("127.0.0.1")
    nodes = []
    for node_id in (1, 2, 3):
        data_dir = os.path.join(scratch, f"{tag}-node-{node_id}")
        nodes.append(Node(os.path.join(bin_dir, "causewayd"), data_dir,
                          f"127.0.0.{node_id}:{port}", node_id))
    voters = []
    for node_id in (1, 2, 3):
        voters += ["--voter", f"{node_id}=127.0.0.{node_id}:{port}"]
    causeway(bin_dir, nodes[0].listen, "cluster", "init", *voters)
    servers = [node.listen for node in nodes]
    return nodes, servers, leader_of(bin_dir, servers)


def bench(bin_dir, server, seconds, workload_args):
    result = causeway(bin_dir, server, "--output", "json", "bench", "append",
                      "--duration", f"{seconds}s", "--warmup", "1s", *workload_args,
                      timeout=seconds * 10 + 60)
    report = json.loads(result.stdout)
    return report["events_per_s"], report["latency_ms"]["p50"], report["latency_ms"]["p99"]


def failover(bin_dir, scratch, tag):
    nodes, servers, leader = start_cluster(bin_dir, scratch, tag)
    all_servers = ",".join(servers)
    causeway(bin_dir, all_servers, "append", "failover", "probe-0", "Probed", "--data", "{}")
    victim = next(node for node in nodes if node.listen == leader)
    killed = time.monotonic()
    victim.kill()
    # The CLI follows the leader: this append returns once a new leader acknowledged it.
    causeway(bin_dir, all_servers, "append", "failover", "probe-1", "Probed", "--data", "{}",
             timeout=60)
    elapsed = time.monotonic() - killed
    for node in nodes:
        node.stop()
    return elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--bin", default="target/release")
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="causeway-cluster-bench-")
    results = {(name, kind): [] for name, _ in WORKLOADS for kind in ("single", "cluster")}
    failovers = []
    try:
        for round_idx in range(args.rounds):
            for name, workload in WORKLOADS:
                tag = f"r{round_idx}-{WORKLOADS.index((name, workload))}"
                data_dir = os.path.join(scratch, f"{tag}-single")
                single = Node(os.path.join(args.bin, "causewayd"), data_dir,
                              f"127.0.0.1:{free_port('127.0.0.1')}")
                figures = bench(args.bin, single.listen, args.seconds, workload)
                single.stop()
                results[(name, "single")].append(figures)
                print(f"round {round_idx + 1} single  {name}: {figures[0]:.0f} events/s, "
                      f"p50 {figures[1]} ms, p99 {figures[2]} ms", flush=True)
                nodes, _, leader = start_cluster(args.bin, scratch, tag + "-cluster")
                figures = bench(args.bin, leader, args.seconds, workload)
                for node in nodes:
                    node.stop()
                results[(name, "cluster")].append(figures)
                print(f"round {round_idx + 1} cluster {name}: {figures[0]:.0f} events/s, "
                      f"p50 {figures[1]} ms, p99 {figures[2]} ms", flush=True)
            seconds = failover(args.bin, scratch, f"r{round_idx}-failover")
            failovers.append(seconds)
            print(f"round {round_idx + 1} failover: {seconds:.2f} s", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print()
    print("| workload | single node events/s | 3-node cluster events/s | cluster / single "
          "| single p50 / p99 ms | cluster p50 / p99 ms |")
    print("|---|---|---|---|---|---|")
    for name, _ in WORKLOADS:
        single = results[(name, "single")]
        cluster = results[(name, "cluster")]
        single_rate = statistics.median(f[0] for f in single)
        cluster_rate = statistics.median(f[0] for f in cluster)
        print(f"| {name} | {single_rate:,.0f} | {cluster_rate:,.0f} | "
              f"{cluster_rate / single_rate:.0%} | "
              f"{statistics.median(f[1] for f in single)} / {statistics.median(f[2] for f in single)} | "
              f"{statistics.median(f[1] for f in cluster)} / {statistics.median(f[2] for f in cluster)} |")
    print()
    print(f"Failover (SIGKILL of the leader to the first write acknowledged by the new one), "
          f"{len(failovers)} runs: median {statistics.median(failovers):.2f} s, "
          f"max {max(failovers):.2f} s")


if __name__ == "__main__":
    sys.exit(main())
