#!/usr/bin/env python3
"""What one audit group commit's disk part costs on this machine, without Tessera: a `pwrite` of
SIZE bytes (about what the audit writer's WAL-buffering VFS hands the kernel per group of ~25
records) at a rolling offset of a preallocated file, then `fdatasync`, COUNT times; prints the
latency percentiles in µs. Run it on the filesystem the server's database lives on (the
directory of PATH; /tmp by default, where `benches/ab.sh` puts its databases), on an idle
machine or beside a load.

  python3 benches/fsync_probe.py [SIZE=5120] [COUNT=2000] [PATH=/tmp/tessera-fsync-probe.dat]
"""
import errno
import os
import statistics
import sys
import time

FILE_BYTES = 4 << 20


def main():
    try:
        size = int(sys.argv[1]) if len(sys.argv) > 1 else 5120
        count = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    except ValueError:
        sys.exit(__doc__.strip().splitlines()[-1].strip())
    path = sys.argv[3] if len(sys.argv) > 3 else "/tmp/tessera-fsync-probe.dat"
    if not 0 < size < FILE_BYTES or not 0 < count <= 1_000_000:
        sys.exit("SIZE must be between 1 and 4 MiB, COUNT between 1 and 1,000,000")
    try:
        # Never an existing file: the probe overwrites and then deletes what it opens.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        hint = " (remove a file left by an interrupted run)" if e.errno == errno.EEXIST else ""
        sys.exit(f"cannot create {path}: {e.strerror}{hint}")
    try:
        # Written and flushed once first, as SQLite reuses its WAL file: later syncs carry data only.
        if os.pwrite(fd, bytes(FILE_BYTES), 0) != FILE_BYTES:
            sys.exit(f"cannot fill {path} with 4 MiB: is its filesystem full?")
        os.fsync(fd)
        buf = os.urandom(size)
        lat_us, offset = [], 0
        for _ in range(count):
            t = time.perf_counter_ns()
            os.pwrite(fd, buf, offset)
            os.fdatasync(fd)
            lat_us.append((time.perf_counter_ns() - t) / 1000)
            offset = (offset + size) % (FILE_BYTES - size)
    except OSError as e:
        # A full disk or a filesystem that cannot sync: say so, not a traceback.
        sys.exit(f"writing {path} failed: {e.strerror}")
    finally:
        os.close(fd)
        os.unlink(path)
    lat_us.sort()
    q = lambda p: lat_us[int(p * (len(lat_us) - 1))]
    print(f"{size} B pwrite + fdatasync, {count} times, on {os.path.dirname(os.path.abspath(path))}: "
          f"p50 {q(0.5):.0f} µs, p90 {q(0.9):.0f}, p99 {q(0.99):.0f}, mean {statistics.mean(lat_us):.0f}")


if __name__ == "__main__":
    main()
