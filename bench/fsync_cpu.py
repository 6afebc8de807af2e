#!/usr/bin/env python3
"""CPU time and latency of one small append + fdatasync, for three ways a log file can be laid out.

    python3 bench/fsync_cpu.py [DIR] [--ops N]

In DIR (default: the current directory) it appends 600-byte records to a 64 MiB file, one
fdatasync after each, and prints per layout the fdatasync p50 and p99 and the CPU time
(user + system of this process) per append + fdatasync:

- `reserved`: the file's space reserved with fallocate first (as Causeway's segments are);
- `zeroed`: the file written with zeros and synced first;
- `growing`: an empty file that grows with each append.

The CPU figure is what a sync costs the machine beside its latency: on a virtual machine each
one also pays for the exits of the virtual disk's notifications. Compare it with a server's CPU
per request (bench/per_request.py) to see how much of that is syncing.
"""
import argparse
import os
import resource
import time

FILE_BYTES = 64 << 20
RECORD = b"x" * 600


def prepare(fd, layout):
    if layout == "reserved":
        os.posix_fallocate(fd, 0, FILE_BYTES)
    elif layout == "zeroed":
        block = b"\0" * (1 << 20)
        for _ in range(FILE_BYTES >> 20):
            os.write(fd, block)
    os.fsync(fd)


def measure(directory, layout, ops):
    path = os.path.join(directory, f"fsync-cpu-{layout}.dat")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        prepare(fd, layout)
        before = resource.getrusage(resource.RUSAGE_SELF)
        latencies = []
        for op in range(ops):
            os.pwrite(fd, RECORD, op * len(RECORD))
            started = time.perf_counter()
            os.fdatasync(fd)
            latencies.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        os.close(fd)
        os.unlink(path)
    latencies.sort()
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / ops
    print(f"{layout:8s} fdatasync p50 {latencies[ops // 2] * 1e3:.3f} ms, "
          f"p99 {latencies[ops * 99 // 100] * 1e3:.3f} ms; "
          f"CPU {cpu * 1e6:.0f} us per append + fdatasync")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", nargs="?", default=".")
    parser.add_argument("--ops", type=int, default=3000)
    args = parser.parse_args()
    if args.ops * len(RECORD) > FILE_BYTES:
        parser.error(f"--ops at most {FILE_BYTES // len(RECORD)}")
    for layout in ("reserved", "zeroed", "growing"):
        measure(args.dir, layout, args.ops)


if __name__ == "__main__":
    main()
