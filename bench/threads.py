#!/usr/bin/env python3
"""Events/s, and CPU per request by node and thread, of a three-node cluster under `causeway bench`.

    python3 bench/threads.py BIN_DIR EVENTS_PER_REQUEST IN_FLIGHT SECONDS [bench append options]

Starts a fresh three-node cluster from BIN_DIR (causewayd and causeway, through bench/cluster.py),
warms it for 2 s, then runs `causeway bench append --append-via stream` at the leader for
SECONDS and prints its events/s and p50, and for each node the CPU (user + system, from
/proc/PID/task/*/stat) per request in all and by thread name, with the share of a core each
thread used. Compare two builds by alternating them in one shell loop.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster as C  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def thread_ticks(pid):
    """CPU ticks by thread name, summed over threads of the same name."""
    by_name = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            name = open(f"/proc/{pid}/task/{tid}/comm").read().strip().replace(" ", "_")
            fields = open(f"/proc/{pid}/task/{tid}/stat").read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        by_name[name] = by_name.get(name, 0) + int(fields[11]) + int(fields[12])
    return by_name


def main():
    bin_dir, epr, in_flight, seconds = sys.argv[1:5]
    extra = sys.argv[5:]
    scratch = tempfile.mkdtemp(prefix="causeway-threads-")
    nodes = []
    try:
        nodes, _servers, leader = C.start_cluster(bin_dir, scratch, "c")
        time.sleep(1)
        bench = [os.path.join(bin_dir, "causeway"), "--server", leader, "--output", "json",
                 "bench", "append", "--in-flight", in_flight, "--events-per-request", epr,
                 "--payload-bytes", "100", "--append-via", "stream"] + extra
        subprocess.run(bench + ["--duration", "2s"], capture_output=True, check=True)
        before = [thread_ticks(node.proc.pid) for node in nodes]
        started = time.time()
        run = subprocess.run(bench + ["--duration", f"{seconds}s", "--warmup", "0s"],
                             capture_output=True, text=True, check=True)
        wall = time.time() - started
        after = [thread_ticks(node.proc.pid) for node in nodes]
        report = json.loads(run.stdout)
        requests = report["events_per_s"] * wall / int(epr)
        us_per_tick = 1e6 / TICKS
        print(f"{report['events_per_s']:,.0f} events/s, p50 {report['latency_ms']['p50']:.2f} ms")
        for node, was, now in zip(nodes, before, after):
            role = "leader  " if node.listen == leader else "follower"
            total = sum(now.values()) - sum(was.values())
            print(f"  {role} {node.listen}: {total * us_per_tick / requests:6.1f} us/request")
            for name in sorted(now, key=lambda name: was.get(name, 0) - now[name]):
                spent = now[name] - was.get(name, 0)
                if spent > 0:
                    print(f"    {name:24s} {spent * us_per_tick / requests:6.1f} us/request"
                          f" {spent / TICKS / wall * 100:5.1f}% of a core")
    finally:
        for node in nodes:
            node.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
