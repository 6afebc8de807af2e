#!/usr/bin/env python3
"""fdatasync latency on this machine's disk by pattern: one writer or three, back to back or paced.

    python3 bench/fsync_pattern.py [--dir DIR] [--seconds S] [--rounds N] [--bytes B] [--keeper]

Each writer appends B bytes (default 6,000, about what a cluster node's Raft log writes per
sync at 1 event and 16 in flight) to its own fallocated file and calls fdatasync, in a loop:
back to back, or paced (a pause of --pause-us after each sync, spinning so the CPU stays
busy, as a node's threads keep it). The cases run interleaved for --rounds rounds; the output
is each case's syncs/s per writer and its latency percentiles, over all rounds.

With --keeper the cases are one paced writer alone and the same writer beside a keeper: a
process that calls fdatasync back to back on a file it never writes, to show whether a disk
that dozes between syncs stays awake when something keeps syncing.
"""
import argparse
import multiprocessing as mp
import os
import tempfile
import time

FILE_BYTES = 256 << 20


def writer(path, seconds, size, pause_us, out):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.posix_fallocate(fd, 0, FILE_BYTES)
        os.fsync(fd)
        record = b"x" * size
        offset, lat = 0, []
        end = time.monotonic() + seconds
        while time.monotonic() < end and offset + size < FILE_BYTES:
            started = time.perf_counter()
            os.pwrite(fd, record, offset)
            os.fdatasync(fd)
            lat.append(time.perf_counter() - started)
            offset += size
            if pause_us:
                until = time.perf_counter() + pause_us / 1e6
                while time.perf_counter() < until:
                    pass
        out.put((len(lat) / seconds, lat))
    finally:
        os.close(fd)
        os.unlink(path)


def keeper(path, stop):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.posix_fallocate(fd, 0, 1 << 20)
        os.fsync(fd)
        while not stop.is_set():
            os.fdatasync(fd)
    finally:
        os.close(fd)
        os.unlink(path)


def run_case(directory, writers, seconds, size, pause_us, kept_awake=False):
    out, stop = mp.Queue(), mp.Event()
    kept = None
    if kept_awake:
        kept = mp.Process(target=keeper, args=(os.path.join(directory, "keeper"), stop),
                          daemon=True)
        kept.start()
        time.sleep(0.2)
    try:
        procs = [mp.Process(target=writer, args=(os.path.join(directory, f"w{i}"), seconds,
                                                 size, pause_us, out))
                 for i in range(writers)]
        for proc in procs:
            proc.start()
        results = [out.get() for _ in procs]
        for proc in procs:
            proc.join()
    finally:
        if kept is not None:
            stop.set()
            kept.join()
    rate = sum(r[0] for r in results) / writers
    return rate, [x for r in results for x in r[1]]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=None, help="folder on the disk to test (default: a temp folder)")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bytes", type=int, default=6000)
    parser.add_argument("--pause-us", type=int, default=1000)
    parser.add_argument("--keeper", action="store_true",
                        help="compare one paced writer alone and beside a keeper")
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="fsync-pattern-", dir=args.dir)
    if args.keeper:
        cases = [(1, args.pause_us, False), (1, args.pause_us, True)]
    else:
        cases = [(1, 0, False), (3, 0, False), (1, args.pause_us, False), (3, args.pause_us, False)]
    rates = {case: [] for case in cases}
    lats = {case: [] for case in cases}
    try:
        for round_idx in range(args.rounds):
            order = cases[round_idx % len(cases):] + cases[:round_idx % len(cases)]
            for case in order:
                writers, pause_us, kept_awake = case
                rate, lat = run_case(directory, writers, args.seconds, args.bytes, pause_us,
                                     kept_awake)
                rates[case].append(rate)
                lats[case] += lat
    finally:
        os.rmdir(directory)
    print(f"{args.bytes}-byte append + fdatasync, {args.rounds} interleaved rounds of {args.seconds} s")
    print("| writers | pause after each sync | keeper | syncs/s per writer | p50 µs | p90 µs | p99 µs |")
    print("|---|---|---|---|---|---|---|")
    for case in cases:
        lat = sorted(lats[case])
        pct = lambda p: lat[min(len(lat) - 1, int(len(lat) * p))] * 1e6  # noqa: E731
        rate = sorted(rates[case])[len(rates[case]) // 2]
        keeper_col = "beside" if case[2] else "none"
        print(f"| {case[0]} | {case[1]} µs | {keeper_col} | {rate:,.0f} | {pct(0.5):.0f} | {pct(0.9):.0f} | {pct(0.99):.0f} |")


if __name__ == "__main__":
    main()
