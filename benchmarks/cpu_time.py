"""CPU time for the benchmarks: a process's own and its decode child's (``data.decode_sandbox`` decodes there,
where ``time.process_time`` does not see it)."""

from __future__ import annotations

import os
import time


def cpu_seconds() -> float:
    """CPU time of this process and of its decode child (if one runs), the child's from /proc/<pid>/stat (clock
    ticks: sum it over many items)."""
    from gnvideo.data.decode.sandbox import current_sandbox

    total = time.process_time()
    pid = current_sandbox().pid
    if pid is not None and os.path.exists(f"/proc/{pid}/stat"):
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    return total
