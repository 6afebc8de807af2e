#!/usr/bin/env python3
"""Causeway beside UmaDB and Redis on one machine, in interleaved rounds.

Each round runs every system on each figure, the systems' order rotated from round to round so
that none always goes first into the machine's weather. Every write measurement starts a fresh
server on a free 127.0.0.1 port with its own empty data folder, durable at acknowledgement
(Causeway fsyncs before the reply; UmaDB fsyncs each commit; Redis runs with `--appendonly yes
--appendfsync always --save ''`), and removes the folder afterwards. The read scan runs on a
store filled once per system before the first round and restarted each round. Causeway is
driven by `causeway bench` (appends over `AppendStream`, and again through the unary `Append` for
a column of their own), the peers by bench/compare/peer-load, which copies its closed-loop
method and its ~100-byte JSON payload. Per measurement, the server's CPU (utime + stime from
/proc/PID/stat, summed over a cluster's nodes) and the client's (from wait4) are divided by
the events acknowledged, warm-up included. Prints a line per measurement as it goes, then
Markdown tables of medians with the per-round ratios Causeway / best peer and the load averages,
also written to --out.

    bench/compare/run [--rounds 5] [--seconds 10] [--warmup 1] [--read-events 1000000]
                      [--figures seq,c16,p16,b100,read,cluster,subscribe]

bench/compare/run installs the peers and builds the binaries, then calls this with their paths.
"""

import argparse
import contextlib
import datetime
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True  # importing bench/cluster.py leaves no __pycache__ in the tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import cluster  # noqa: E402  bench/cluster.py: Node, free_port, start_cluster

SYSTEMS = ("causeway", "umadb", "redis")
TITLES = {"causeway": "Causeway", "umadb": "UmaDB", "redis": "Redis",
          "unary": "Causeway (unary Append)"}
# Causeway's appends go over `AppendStream` (one stream per in-flight worker, each append a
# message), the API meant for a writer with many appends. The same figures through the unary
# `Append`, one HTTP/2 call per append, are measured in the same rounds and shown beside them.
UNARY = "unary"
PAYLOAD_BYTES = 100
SUBSCRIBERS = 10
SUBSCRIBE_RATE = 500
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")

# Figures every system runs: (key, title, requests in flight, events per request).
WRITE_FIGURES = [
    ("seq", "1 event/request, 1 client in sequence", 1, 1),
    ("c16", "1 event/request, 16 in flight", 16, 1),
    ("p16", "1 event/request, 16 in flight pipelined on one connection", 16, 1),
    ("b100", "100 events/request, 16 in flight", 16, 100),
]
# Figures only Causeway runs: a three-node cluster beside the single node's figure of the same key.
CLUSTER_FIGURES = [("c16", 16, 1), ("b100", 16, 100)]
# What --figures selects from: the write figures by key, then the scan, the cluster's figures and
# the subscription latency.
FIGURE_NAMES = [key for key, _, _, _ in WRITE_FIGURES] + ["read", "cluster", "subscribe"]
NOTES = {
    ("p16", "causeway"): "`--append-via pipeline`: the 16 loops share one `AppendStream`",
    ("p16", "umadb"): "as for 16 in flight: its client has no pipelined append",
    ("p16", "redis"): "the 16 loops pipeline their requests on one connection",
    ("b100", "redis"): "MULTI + 100 XADD + EXEC per request, 16 connections",
    ("c16", "redis"): "16 connections (RESP does not multiplex)",
    ("read", "causeway"): "`causeway bench read --read-via stream`: one `Subscribe` from "
                          "position 1 per pass, ended at `CaughtUp`, as UmaDB's streaming read",
    ("read", "umadb"): "one streaming read per pass, the client's default batch",
    ("read", "redis"): "XRANGE pages of 1,000",
}


class Failed(Exception):
    """A measurement that did not complete; the round's cell stays empty."""


def cpu_seconds(pids):
    total_ticks = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            # Fields after the command name, which may itself hold spaces and parentheses.
            fields = stat.read().rsplit(")", 1)[1].split()
        total_ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return total_ticks / CLOCK_TICKS_PER_S


def load_average():
    with open("/proc/loadavg") as loadavg:
        return float(loadavg.read().split()[0])


def wait_for_port(addr, proc, timeout=60):
    host, port = addr.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Failed(f"server on {addr} exited with {proc.returncode}")
        try:
            with socket.create_connection((host, int(port)), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise Failed(f"server on {addr} did not listen within {timeout} s")


def redis_ready(addr, timeout=120):
    """Waits until Redis answers PING with PONG (it answers LOADING while it replays its AOF)."""
    host, port = addr.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, int(port)), timeout=5) as sock:
                sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise Failed(f"redis on {addr} did not answer PING within {timeout} s")


class Server:
    """One system's server process (or a cluster's three), on a data folder it does not own."""

    def __init__(self, args, system, data_dir):
        self.system = system
        self.procs = []
        self.cluster_nodes = None
        os.makedirs(data_dir, exist_ok=True)
        port = cluster.free_port("127.0.0.1")
        self.addr = f"127.0.0.1:{port}"
        if system in ("causeway", UNARY):
            try:
                node = cluster.Node(os.path.join(args.bin, "causewayd"),
                                    os.path.join(data_dir, "causeway"), self.addr)
            except SystemExit as err:  # bench/cluster.py's way of saying a node did not start
                raise Failed(str(err)) from None
            self.cluster_nodes = [node]
            self.procs = [node.proc]
            return
        self.log = open(data_dir + ".log", "w")
        if system == "umadb":
            argv = [args.umadb, "--listen", self.addr, "--db-path", data_dir]
        else:
            argv = [args.redis, "--port", str(port), "--bind", "127.0.0.1", "--dir", data_dir,
                    "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                    "--daemonize", "no"]
        proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        self.procs = [proc]
        try:
            wait_for_port(self.addr, proc)
            if system == "redis":
                redis_ready(self.addr)
        except Failed:
            self.stop()
            raise

    def cpu(self):
        return cpu_seconds([proc.pid for proc in self.procs])

    def stop(self):
        if self.cluster_nodes is not None:
            for node in self.cluster_nodes:
                node.stop()
            return
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.log.close()


class ClusterServer(Server):
    """Causeway's three-node cluster (node N on 127.0.0.N), formed as bench/cluster.py forms it
    and driven through its leader; a node that started is stopped again if forming fails."""

    def __init__(self, args, scratch, tag):
        self.system = "causeway"
        self.cluster_nodes = []
        port = cluster.free_port("127.0.0.1")
        try:
            for node_id in (1, 2, 3):
                data_dir = os.path.join(scratch, f"{tag}-node-{node_id}")
                self.cluster_nodes.append(cluster.Node(
                    os.path.join(args.bin, "causewayd"), data_dir,
                    f"127.0.0.{node_id}:{port}", node_id))
            voters = []
            for node_id in (1, 2, 3):
                voters += ["--voter", f"{node_id}=127.0.0.{node_id}:{port}"]
            cluster.causeway(args.bin, self.cluster_nodes[0].listen, "cluster", "init", *voters)
            self.addr = cluster.leader_of(args.bin, [node.listen for node in self.cluster_nodes])
        except SystemExit as err:  # bench/cluster.py's way of saying a step failed
            self.stop()
            raise Failed(str(err)) from None
        self.procs = [node.proc for node in self.cluster_nodes]


def run_client(argv, timeout):
    """Runs a load client; returns its stdout and the CPU seconds it used (user + system)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        watchdog = threading.Timer(timeout, proc.kill)
        watchdog.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            watchdog.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode()
        if proc.returncode != 0:
            stderr = err.read().decode().strip()
            raise Failed(f"{os.path.basename(argv[0])} exited {proc.returncode}: "
                         f"{stderr[-500:] or stdout[-500:]}")
        return stdout, usage.ru_utime + usage.ru_stime


def parse_json(text):
    """The client's report: one JSON document (`causeway bench` pretty-prints it)."""
    try:
        return json.loads(text)
    except ValueError as err:
        raise Failed(f"cannot parse the client's report: {err}: {text[:200]!r}") from None


def duration_arg(seconds):
    return f"{int(round(seconds * 1000))}ms"


def causeway_argv(args, addr, workload, *extra):
    return [os.path.join(args.bin, "causeway"), "--server", addr, "--output", "json",
            "bench", workload, "--payload-bytes", str(PAYLOAD_BYTES), "--quiet", *extra]


def client_argv(args, system, addr, in_flight, events_per_request, key=None):
    timing = ["--duration", duration_arg(args.seconds), "--warmup", duration_arg(args.warmup)]
    if system in ("causeway", UNARY):
        via = "unary" if system == UNARY else "pipeline" if key == "p16" else "stream"
        return causeway_argv(args, addr, "append", "--in-flight", str(in_flight),
                             "--events-per-request", str(events_per_request),
                             "--append-via", via, *timing)
    pipelined = ["--connections", "1"] if key == "p16" and system == "redis" else []
    return [args.peer_load, system, "append", "--server", addr, "--in-flight", str(in_flight),
            "--events-per-request", str(events_per_request),
            "--payload-bytes", str(PAYLOAD_BYTES),
            "--duration", str(args.seconds), "--warmup", str(args.warmup), *pipelined]


def read_argv(args, system, addr):
    # No warm-up: one UmaDB pass is one request, so only whole-run rates compare.
    if system == "causeway":
        return causeway_argv(args, addr, "read", "--read-via", "stream",
                             "--duration", duration_arg(args.seconds))
    return [args.peer_load, system, "read", "--server", addr,
            "--duration", str(args.seconds)]


def client_timeout(args):
    return args.seconds * 10 + args.warmup + 120


def measure(server, argv, timeout, reads=False):
    """Runs one client against `server`; returns its figures with CPU per acknowledged event
    (per event read, for `reads`)."""
    cpu_before = server.cpu()
    stdout, client_cpu = run_client(argv, timeout)
    server_cpu = server.cpu() - cpu_before
    report = parse_json(stdout)
    if "head_check" in report:
        if not report.get("ok", False):
            raise Failed(f"causeway bench failed: {report.get('failures')}")
        acknowledged = report["head_check"]["acknowledged_events"]
    else:
        acknowledged = report["acknowledged_events"]
    if reads:
        acknowledged = report["events"]
    latency = report.get("latency_ms") or {}
    figures = {
        "rate": report["events_per_s"],
        "p50": latency.get("p50"),
        "p99": latency.get("p99"),
        "server_us": server_cpu / max(acknowledged, 1) * 1e6,
        "client_us": client_cpu / max(acknowledged, 1) * 1e6,
        "events": acknowledged,
    }
    if report.get("subscribe"):
        delivery = report["subscribe"]["delivery_latency_ms"]
        figures["delivery_p50"] = delivery["p50"]
        figures["delivery_p99"] = delivery["p99"]
    return figures


class Run:
    """The scratch folder, the results, and the failures of one invocation."""

    def __init__(self, args):
        self.args = args
        os.makedirs(args.scratch_parent, exist_ok=True)
        self.scratch = tempfile.mkdtemp(prefix="compare-", dir=args.scratch_parent)
        self.results = {}  # (figure, system) -> [figures or None per round]
        self.failures = []
        self.loads = []  # (round, order, load at start, load at end)
        self.read_dirs = {}

    def record(self, key, round_idx, figures):
        rounds = self.results.setdefault(key, [None] * self.args.rounds)
        rounds[round_idx] = figures

    def attempt(self, label, key, round_idx, work):
        try:
            figures = work()
        except Failed as err:
            self.failures.append(f"round {round_idx + 1} {label}: {err}")
            print(f"round {round_idx + 1} {label}: FAILED: {err}", flush=True)
            return
        self.record(key, round_idx, figures)
        line = f"round {round_idx + 1} {label}: {figures['rate']:,.0f} events/s"
        if figures.get("p50") is not None:
            line += f", p50 {figures['p50']:.3f} ms, p99 {figures['p99']:.3f} ms"
        line += (f", server {figures['server_us']:.1f} us/event, "
                 f"client {figures['client_us']:.1f} us/event")
        if "head_p50" in figures:
            line += (f", head p50 {figures['head_p50']:.3f} ms, "
                     f"fsync p50 {figures['fsync_p50']:.3f} ms")
        if "delivery_p99" in figures:
            line += (f", delivery p50 {figures['delivery_p50']:.3f} ms, "
                     f"p99 {figures['delivery_p99']:.3f} ms")
        print(line, flush=True)

    def fresh_dir(self, name):
        path = os.path.join(self.scratch, name)
        shutil.rmtree(path, ignore_errors=True)
        return path

    def write_figure(self, system, key, in_flight, events_per_request, round_idx):
        data_dir = self.fresh_dir(f"r{round_idx}-{key}-{system}")
        server = Server(self.args, system, data_dir)
        try:
            argv = client_argv(self.args, system, server.addr, in_flight, events_per_request, key)
            figures = measure(server, argv, client_timeout(self.args))
            if system == "causeway" and key == "seq":
                figures.update(self.head_and_fsync(server, data_dir))
            return figures
        finally:
            server.stop()
            shutil.rmtree(data_dir, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                os.remove(data_dir + ".log")

    def head_and_fsync(self, server, data_dir):
        """Causeway's head RPC p50 and the disk's fdatasync p50, after the append run."""
        probe_dir = data_dir + "-fsync-probe"
        os.makedirs(probe_dir, exist_ok=True)
        argv = causeway_argv(self.args, server.addr, "head", "--duration",
                             duration_arg(min(self.args.seconds, 2)), "--fsync-probe", probe_dir)
        stdout, _ = run_client(argv, client_timeout(self.args))
        shutil.rmtree(probe_dir, ignore_errors=True)
        report = parse_json(stdout)
        return {"head_p50": report["latency_ms"]["p50"],
                "fsync_p50": report["fsync"]["latency_ms"]["p50"]}

    def fill(self, system):
        """Fills a store with --read-events events for the read scan, once per invocation."""
        data_dir = self.fresh_dir(f"read-{system}")
        started = time.monotonic()
        server = Server(self.args, system, data_dir)
        try:
            n_events = str(self.args.read_events)
            if system == "causeway":
                argv = causeway_argv(self.args, server.addr, "read", "--fill", n_events,
                                     "--requests", "1")
            else:
                argv = [self.args.peer_load, system, "fill", "--server", server.addr,
                        "--events", n_events, "--payload-bytes", str(PAYLOAD_BYTES)]
            run_client(argv, timeout=3600)
        finally:
            server.stop()
        print(f"filled {TITLES[system]} with {self.args.read_events:,} events in "
              f"{time.monotonic() - started:.0f} s", flush=True)
        self.read_dirs[system] = data_dir

    def read_figure(self, system, round_idx):
        if system not in self.read_dirs:
            raise Failed("its store was not filled")
        server = Server(self.args, system, self.read_dirs[system])
        try:
            return measure(server, read_argv(self.args, system, server.addr),
                           client_timeout(self.args), reads=True)
        finally:
            server.stop()

    def cluster_figure(self, key, in_flight, events_per_request, round_idx):
        tag = f"r{round_idx}-cluster-{key}"
        server = ClusterServer(self.args, self.scratch, tag)
        try:
            argv = client_argv(self.args, "causeway", server.addr, in_flight, events_per_request)
            return measure(server, argv, client_timeout(self.args))
        finally:
            server.stop()
            for node_id in (1, 2, 3):
                node_dir = os.path.join(self.scratch, f"{tag}-node-{node_id}")
                shutil.rmtree(node_dir, ignore_errors=True)

    def subscribe_figure(self, round_idx):
        data_dir = self.fresh_dir(f"r{round_idx}-subscribe")
        server = Server(self.args, "causeway", data_dir)
        try:
            argv = causeway_argv(self.args, server.addr, "subscribe",
                                 "--subscribers", str(SUBSCRIBERS), "--rate", str(SUBSCRIBE_RATE),
                                 "--duration", duration_arg(self.args.seconds),
                                 "--warmup", duration_arg(self.args.warmup))
            return measure(server, argv, client_timeout(self.args))
        finally:
            server.stop()
            shutil.rmtree(data_dir, ignore_errors=True)

    def rounds(self):
        figures = self.args.figures
        for system in SYSTEMS if "read" in figures else []:
            try:
                self.fill(system)
            except Failed as err:
                self.failures.append(f"fill {system}: {err}")
                print(f"fill {TITLES[system]}: FAILED: {err}", flush=True)
        for round_idx in range(self.args.rounds):
            shift = round_idx % len(SYSTEMS)
            order = SYSTEMS[shift:] + SYSTEMS[:shift]
            load_start = load_average()
            for key, title, in_flight, events_per_request in WRITE_FIGURES:
                unary = () if key == "p16" else (UNARY,)
                for system in order + unary if key in figures else []:
                    self.attempt(f"{TITLES[system]} {title}", (key, system), round_idx,
                                 lambda s=system, k=key, i=in_flight, e=events_per_request:
                                 self.write_figure(s, k, i, e, round_idx))
            for system in order if "read" in figures else []:
                self.attempt(f"{TITLES[system]} read scan", ("read", system), round_idx,
                             lambda s=system: self.read_figure(s, round_idx))
            for key, in_flight, events_per_request in CLUSTER_FIGURES if "cluster" in figures else []:
                self.attempt(f"Causeway 3-node cluster {key}", (key, "cluster"), round_idx,
                             lambda k=key, i=in_flight, e=events_per_request:
                             self.cluster_figure(k, i, e, round_idx))
            if "subscribe" in figures:
                self.attempt(f"Causeway subscribe, {SUBSCRIBERS} subscribers",
                             ("subscribe", "causeway"), round_idx,
                             lambda: self.subscribe_figure(round_idx))
            self.loads.append((round_idx + 1, order, load_start, load_average()))

    def cleanup(self):
        shutil.rmtree(self.scratch, ignore_errors=True)


def median_of(rounds, field):
    values = [r[field] for r in rounds if r is not None and r.get(field) is not None]
    return statistics.median(values) if values else None


def fmt_rate(value):
    return "—" if value is None else f"{value:,.0f}"


def fmt_ms(value):
    if value is None:
        return "—"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def fmt_us(value):
    return "—" if value is None else f"{value:.1f}"


def cell(rounds, latency=True):
    if not rounds or all(r is None for r in rounds):
        return "—"
    text = f"{fmt_rate(median_of(rounds, 'rate'))} ev/s"
    if latency and median_of(rounds, "p50") is not None:
        text += f", p50 {fmt_ms(median_of(rounds, 'p50'))} / p99 {fmt_ms(median_of(rounds, 'p99'))} ms"
    return text


def ratios(ours, theirs_by_system):
    """Per round: Causeway's rate over the best peer's rate in that round."""
    per_round = []
    for round_idx, mine in enumerate(ours):
        peers = [rounds[round_idx]["rate"] for rounds in theirs_by_system
                 if rounds and rounds[round_idx] is not None]
        if mine is None or not peers or max(peers) == 0:
            per_round.append(None)
        else:
            per_round.append(mine["rate"] / max(peers))
    return per_round


def fmt_ratios(per_round):
    shown = [r for r in per_round if r is not None]
    if not shown:
        return "—"
    listed = ", ".join("—" if r is None else f"{r:.2f}" for r in per_round)
    return f"**{statistics.median(shown):.2f}** ({listed})"


def report(run, args, started, finished):
    res = run.results
    out = []
    out.append(f"Causeway beside UmaDB 0.7.8 and Redis ({redis_version(args.redis)}): "
               f"{args.rounds} interleaved round(s), {args.seconds:g} s per figure after "
               f"{args.warmup:g} s of warm-up, {PAYLOAD_BYTES}-byte payloads, durable at ack. "
               f"{os.cpu_count()} CPUs; started {started:%Y-%m-%d %H:%M} UTC, took "
               f"{(finished - started).total_seconds() / 60:.1f} min. Cells are medians over "
               f"rounds; the ratio is Causeway's events/s over the best peer's in the same "
               f"round (above 1: Causeway ahead), median in bold, then each round.")
    out.append("")
    out.append("| Figure | Causeway | UmaDB | Redis | Causeway ÷ best peer | "
               "Causeway, unary Append | unary ÷ best peer |")
    out.append("|---|---|---|---|---|---|---|")
    rows = [(key, title) for key, title, _, _ in WRITE_FIGURES]
    rows.append(("read", f"read scan of {args.read_events:,} events"))
    notes = []
    for key, title in rows:
        cells = []
        for system in SYSTEMS:
            # A read's latency is per page for some clients and per pass for others: rate only.
            text = cell(res.get((key, system)), latency=key != "read")
            if (key, system) in NOTES and text != "—":
                notes.append(f"{TITLES[system]}, {title}: {NOTES[(key, system)]}.")
                text += f" [{len(notes)}]"
            cells.append(text)
        peers = [res.get((key, peer)) for peer in ("umadb", "redis")]
        per_round = ratios(res.get((key, "causeway"), [None] * args.rounds), peers)
        unary = res.get((key, UNARY))
        unary_ratios = fmt_ratios(ratios(unary, peers)) if unary else "—"
        out.append(f"| {title} | " + " | ".join(cells) + f" | {fmt_ratios(per_round)} | "
                   f"{cell(unary, latency=key != 'read')} | {unary_ratios} |")
    out.append("")
    for note_idx, note in enumerate(notes, 1):
        out.append(f"[{note_idx}] {note}  ")
    out.append("")

    out.append("CPU per acknowledged event (per event read for the scan), µs, medians: server "
               "(utime + stime of its process) / load client.")
    out.append("")
    out.append("| Figure | Causeway | UmaDB | Redis | Causeway, unary Append |")
    out.append("|---|---|---|---|---|")
    for key, title in rows:
        cells = []
        for system in SYSTEMS + (UNARY,):
            rounds = res.get((key, system))
            if not rounds or all(r is None for r in rounds):
                cells.append("—")
            else:
                cells.append(f"{fmt_us(median_of(rounds, 'server_us'))} / "
                             f"{fmt_us(median_of(rounds, 'client_us'))}")
        out.append(f"| {title} | " + " | ".join(cells) + " |")
    out.append("")

    seq = res.get(("seq", "causeway"), [])
    out.append("Causeway, 1 event/request in sequence, beside the bounds of its latency target "
               "(the issue's p50 ≤ fsync p50 + 1.5 × head p50, and the earlier "
               "p50 ≤ 1.5 × (fsync p50 + head p50)); head is the `head` RPC from the same "
               "client, fsync a 4 KiB append + fdatasync on the data disk, both measured "
               "right after the append run, ms.")
    out.append("")
    out.append("| Round | append p50 | head p50 | fsync p50 | fsync + 1.5 × head | "
               "1.5 × (fsync + head) |")
    out.append("|---|---|---|---|---|---|")
    bounds = []
    for round_idx, figures in enumerate(seq):
        if figures is None or "head_p50" not in figures:
            continue
        bound = figures["fsync_p50"] + 1.5 * figures["head_p50"]
        earlier = 1.5 * (figures["fsync_p50"] + figures["head_p50"])
        bounds.append((bound, earlier))
        out.append(f"| {round_idx + 1} | {fmt_ms(figures['p50'])} | {fmt_ms(figures['head_p50'])} "
                   f"| {fmt_ms(figures['fsync_p50'])} | {fmt_ms(bound)} | {fmt_ms(earlier)} |")
    if bounds:
        out.append(f"| median | {fmt_ms(median_of(seq, 'p50'))} | "
                   f"{fmt_ms(median_of(seq, 'head_p50'))} | {fmt_ms(median_of(seq, 'fsync_p50'))} "
                   f"| {fmt_ms(statistics.median(b for b, _ in bounds))} "
                   f"| {fmt_ms(statistics.median(e for _, e in bounds))} |")
    out.append("")

    out.append("Causeway, one node beside a three-node cluster (127.0.0.1-3, driven through the "
               "leader; server CPU summed over the three nodes).")
    out.append("")
    out.append("| Workload | single node | 3-node cluster | cluster ÷ single | server CPU µs/event, "
               "single / cluster |")
    out.append("|---|---|---|---|---|")
    for key, _, _ in CLUSTER_FIGURES:
        title = next(t for k, t, _, _ in WRITE_FIGURES if k == key)
        single = res.get((key, "causeway"), [None] * args.rounds)
        multi = res.get((key, "cluster"), [None] * args.rounds)
        per_round = [None if s is None or m is None or s["rate"] == 0 else m["rate"] / s["rate"]
                     for s, m in zip(single, multi)]
        out.append(f"| {title} | {cell(single)} | {cell(multi)} | {fmt_ratios(per_round)} | "
                   f"{fmt_us(median_of(single, 'server_us'))} / "
                   f"{fmt_us(median_of(multi, 'server_us'))} |")
    out.append("")

    sub = res.get(("subscribe", "causeway"), [])
    out.append(f"Causeway subscribe: {SUBSCRIBERS} subscribers on the run's scope while one "
               f"writer appends at up to {SUBSCRIBE_RATE}/s; delivery latency is from the "
               f"append's send to each subscriber's receipt.")
    out.append("")
    out.append("| appends/s | delivery p50 ms | delivery p99 ms | server CPU µs/append | "
               "client CPU µs/append |")
    out.append("|---|---|---|---|---|")
    out.append(f"| {fmt_rate(median_of(sub, 'rate'))} | {fmt_ms(median_of(sub, 'delivery_p50'))} "
               f"| {fmt_ms(median_of(sub, 'delivery_p99'))} | "
               f"{fmt_us(median_of(sub, 'server_us'))} | {fmt_us(median_of(sub, 'client_us'))} |")
    out.append("")

    out.append("Rounds: the order the systems ran in, and the 1-minute load average at each "
               "round's start and end.")
    out.append("")
    out.append("| Round | order | load at start | load at end |")
    out.append("|---|---|---|---|")
    for round_no, order, load_start, load_end in run.loads:
        out.append(f"| {round_no} | {', '.join(TITLES[s] for s in order)} | "
                   f"{load_start:.2f} | {load_end:.2f} |")
    if run.failures:
        out.append("")
        out.append("Failed measurements (left out of the medians):")
        out.append("")
        for failure in run.failures:
            out.append(f"- {failure}")
    return "\n".join(out) + "\n"


def redis_version(binary):
    try:
        text = subprocess.run([binary, "--version"], capture_output=True, text=True,
                              timeout=10).stdout
    except OSError:
        return "version unknown"
    for word in text.split():
        if word.startswith("v="):
            return word[2:]
    return "version unknown"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--seconds", type=float, default=10,
                        help="measured seconds per figure (default 10)")
    parser.add_argument("--warmup", type=float, default=1,
                        help="seconds of warm-up before each write figure (default 1)")
    parser.add_argument("--read-events", type=int, default=1_000_000,
                        help="events in each system's store for the read scan (default 1M)")
    parser.add_argument("--bin", default="target/release", help="Causeway's release binaries")
    parser.add_argument("--umadb", required=True, help="the umadb server binary")
    parser.add_argument("--redis", required=True, help="the redis-server binary")
    parser.add_argument("--peer-load", required=True, help="bench/compare/peer-load's binary")
    parser.add_argument("--scratch-parent", default="target/compare",
                        help="where the scratch data folder is made (and removed at the end)")
    parser.add_argument("--out", help="the Markdown file to write "
                        "(default target/compare/results-<UTC time>.md)")
    parser.add_argument("--figures", default=",".join(FIGURE_NAMES),
                        help="which figures to measure, comma-separated, of "
                             f"{', '.join(FIGURE_NAMES)} (default all; the table shows the "
                             "others as —)")
    args = parser.parse_args()
    args.figures = [name.strip() for name in args.figures.split(",") if name.strip()]
    unknown = sorted(set(args.figures) - set(FIGURE_NAMES))
    if unknown or not args.figures:
        parser.error(f"--figures takes some of {', '.join(FIGURE_NAMES)}; "
                     f"{', '.join(unknown) or 'none'} given")
    if args.rounds < 1 or args.seconds <= 0 or args.warmup < 0 or args.read_events < 1:
        parser.error("--rounds, --seconds and --read-events must be positive")
    started = datetime.datetime.now(datetime.timezone.utc)
    out_path = args.out or f"target/compare/results-{started:%Y%m%dT%H%M%SZ}.md"
    run = Run(args)
    try:
        run.rounds()
    finally:
        run.cleanup()
    text = report(run, args, started, datetime.datetime.now(datetime.timezone.utc))
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w") as out:
        out.write(text)
    print()
    print(text, end="")
    print(f"(written to {out_path})", file=sys.stderr)
    return 1 if run.failures else 0


if __name__ == "__main__":
    sys.exit(main())
