#!/usr/bin/env python3
"""Server CPU and context switches per request, on each node, for a fixed number of appends.

    python3 bench/per_request.py BIN_DIR single|cluster IN_FLIGHT EVENTS_PER_REQUEST REQUESTS

Starts a fresh single node or three-node cluster from BIN_DIR (causewayd and causeway), warms
it with 200 requests, then runs `causeway bench append --requests REQUESTS` at the leader while
`perf stat -e task-clock,context-switches,cpu-migrations -p PID` watches every node, and
prints one line: events/s, p50, and per request each node's CPU and switches and the client's
CPU. Compare two builds by alternating them in one shell loop. Needs `perf`.
"""
import os, sys, json, subprocess, tempfile, shutil, time, re
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster as C

def main():
    bin_dir, mode, inflight, epr, reqs = sys.argv[1:6]
    reqs = int(reqs)
    scratch = tempfile.mkdtemp(prefix="causeway-per-request-")
    try:
        if mode == "cluster":
            nodes, servers, leader = C.start_cluster(bin_dir, scratch, "c")
        else:
            nodes = [C.Node(os.path.join(bin_dir, "causewayd"), os.path.join(scratch, "s"), f"127.0.0.1:{C.free_port('127.0.0.1')}")]
            leader = nodes[0].listen
        time.sleep(1)
        # warm up
        subprocess.run([os.path.join(bin_dir, "causeway"), "--server", leader, "--output", "json", "bench", "append",
                "--requests", "200", "--warmup", "0s", "--in-flight", inflight, "--events-per-request", epr], capture_output=True)
        stats = []
        for n in nodes:
            role = "L" if n.listen == leader else "F"
            stats.append((role, subprocess.Popen(["perf", "stat", "-x,", "-e", "task-clock,context-switches,cpu-migrations", "-p", str(n.proc.pid)], stderr=subprocess.PIPE, text=True)))
        time.sleep(0.3)
        t0 = time.time()
        r = subprocess.run(["perf", "stat", "-x,", "-e", "task-clock", "--", os.path.join(bin_dir, "causeway"), "--server", leader, "--output", "json", "bench", "append",
                "--requests", str(reqs), "--warmup", "0s", "--in-flight", inflight, "--events-per-request", epr], capture_output=True, text=True)
        wall = time.time() - t0
        for _, s in stats: s.send_signal(2)
        rep = json.loads(r.stdout)
        out = [f"{mode} if={inflight} epr={epr}: {rep['events_per_s']:,.0f} ev/s p50 {rep['latency_ms']['p50']:.2f}ms | per request:"]
        def parse(text):
            d = {}
            for line in text.splitlines():
                p = line.split(",")
                if len(p) > 3 and p[0] and p[0][0].isdigit():
                    d[p[2]] = float(p[0])
            return d
        for role, s in stats:
            _, err = s.communicate()
            d = parse(err)
            out.append(f"{role}: {d.get('task-clock',0)*1e3/reqs:.0f}us {d.get('context-switches',0)/reqs:.1f}cs")
        d = parse(r.stderr)
        out.append(f"client: {d.get('task-clock',0)*1e3/reqs:.0f}us")
        print("  ".join(out), flush=True)
        for n in nodes: n.stop()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
main()
