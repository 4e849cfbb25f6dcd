#!/usr/bin/python3
"""A stand-in for a Celery worker: a main process with one forked child.

Each process appends every SIGTERM it receives to its own file under /run/signal-probe.
On SIGTERM the main process waits a moment (as a draining worker would), then writes a
report of what its child had received by then, and exits 0 for systemd to restart it.
If systemd had signalled the whole control group, the child's record would show it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

STATE_DIR = Path("/run/signal-probe")
DRAIN_SECONDS = 1.0


def record_signals_to(path: Path) -> None:
    def handler(signum: int, _frame: object) -> None:
        with path.open("a") as record:
            record.write(f"{signal.Signals(signum).name}\n")

    signal.signal(signal.SIGTERM, handler)


def run_child() -> None:
    record_signals_to(STATE_DIR / f"child-{os.getpid()}.signals")
    while True:
        signal.pause()


def run_main() -> None:
    received = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: received.append(signum))
    child_pid = os.fork()
    if child_pid == 0:
        run_child()
    (STATE_DIR / "main.pid").write_text(f"{os.getpid()} {child_pid}\n")
    while not received:
        signal.pause()
    time.sleep(DRAIN_SECONDS)
    child_record = STATE_DIR / f"child-{child_pid}.signals"
    report = {
        "main_pid": os.getpid(),
        "main_signals": [signal.Signals(s).name for s in received],
        "child_pid": child_pid,
        "child_alive": child_is_alive(child_pid),
        "child_signals": child_record.read_text().split() if child_record.exists() else [],
    }
    (STATE_DIR / f"report-{os.getpid()}.json").write_text(json.dumps(report))
    sys.exit(0)


def child_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


if __name__ == "__main__":
    STATE_DIR.mkdir(exist_ok=True)
    run_main()
