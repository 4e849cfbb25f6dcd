"""Helpers shared by every scenario's testinfra tests (pytest loads this for molecule/*/tests)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def unit_properties(host, unit: str, *names: str) -> dict[str, str]:
    """`systemctl show` properties of a unit as a dict."""
    args = " ".join(f"--property={name}" for name in names)
    output = host.check_output(f"systemctl show --no-pager {args} -- {unit}")
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


def journal(host, unit: str, lines: int = 50) -> str:
    """The unit's last journal lines, for assertion messages."""
    return host.run(f"journalctl --no-pager -n {lines} -u {unit}").stdout


def wait_for(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll `condition` until it returns something truthy; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@pytest.fixture
def service_journal(host):
    """Returns a function giving a unit's journal, to put in assertion messages."""
    return lambda unit: journal(host, unit)
