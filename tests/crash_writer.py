"""Child process for the crash tests: appends and flushes in a loop, reporting each flushed
log end offset on stdout, until it is killed.

Usage: python crash_writer.py ENGINE DIRECTORY SEED
"""

from __future__ import annotations

import random
import sys

import tidelog

SETTINGS = dict(segment_bytes=64 * 1024, index_interval_bytes=1024)


def value_for(offset: int) -> bytes:
    """The deterministic value stored at ``offset`` (so the parent can verify content)."""
    return (b"%d:" % offset) * (1 + offset % 97)


def main() -> None:
    engine, directory, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = random.Random(seed)
    log = tidelog.Log.open(directory, engine=engine, **SETTINGS)
    out = sys.stdout
    while True:
        start = log.end_offset
        n = rng.randint(1, 8)
        log.append([(b"%d" % o, value_for(o)) for o in range(start, start + n)], timestamp=start)
        if rng.random() < 0.5:
            log.flush()
            out.write(f"{log.end_offset}\n")
            out.flush()


if __name__ == "__main__":
    main()
