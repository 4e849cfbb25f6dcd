"""scripts/testhost-docker/docker, the `docker` whose `docker exec` goes through one channel per test host,
run against a stand-in docker whose containers are this machine: its `exec -i -e VAR=VALUE NAME ARGV`
runs ARGV here, any other command prints what it was asked, and container "stopped" runs nothing."""

import importlib.util
import os
import signal
import subprocess
import tempfile
import time
from importlib.machinery import SourceFileLoader
from pathlib import Path

import pytest

SHIM = Path(__file__).parents[3] / "scripts" / "testhost-docker" / "docker"
STAND_IN = """#!/bin/bash
if [[ "$*" == *stopped* ]]; then echo "Error response from daemon: container stopped is not running" >&2; exit 1; fi
if [[ "$1 $2 $3" == "exec -i -e" ]]; then variable="$4"; shift 5; exec env "$variable" "$@"; fi
echo "real docker: $*"
"""


class Docker:
    """The shim as docker's callers run it: first in PATH, the stand-in after it, sockets under TMPDIR."""

    def __init__(self, tmp_path: Path):
        bin_directory = tmp_path / "bin"
        bin_directory.mkdir()
        (bin_directory / "docker").write_text(STAND_IN)
        (bin_directory / "docker").chmod(0o755)
        self.tmp_path = tmp_path
        self.environment = {
            **os.environ,
            "PATH": f"{SHIM.parent}:{bin_directory}:{os.environ['PATH']}",
            "TMPDIR": str(tmp_path),
        }

    def run(self, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["docker", *args], input=stdin, capture_output=True, env=self.environment, timeout=30, check=False
        )

    def start(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(["docker", *args], env=self.environment, stderr=subprocess.PIPE)

    def daemons(self) -> list[int]:
        found = subprocess.run(["pgrep", "-f", f"{SHIM} --serve"], capture_output=True, text=True, check=False)
        mine = f"TMPDIR={self.tmp_path}\0".encode()
        return [int(pid) for pid in found.stdout.split() if mine in Path(f"/proc/{pid}/environ").read_bytes()]


@pytest.fixture(name="docker")
def fixture_docker():
    # Not pytest's tmp_path: a Unix socket's path has at most 107 bytes.
    with tempfile.TemporaryDirectory(prefix="rc-") as directory:
        docker = Docker(Path(directory))
        yield docker
        for pid in docker.daemons():
            os.kill(pid, signal.SIGTERM)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["exec", "host", "/bin/sh", "-c", "true"], ("host", ["/bin/sh", "-c", "true"], False)),
        (["exec", "-i", "host", "/bin/sh", "-c", "true"], ("host", ["/bin/sh", "-c", "true"], True)),
        (["exec", "-u", "nobody", "host", "id"], None),
        (["exec", "-i"], None),
        (["cp", "host:/etc/hostname", "."], None),
    ],
)
def test_only_a_plain_exec_goes_through_the_channel(args: list[str], expected) -> None:
    loader = SourceFileLoader("testhost_docker", str(SHIM))
    shim = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(shim)
    assert shim.exec_request(args) == expected


def test_a_command_gets_its_output_exit_status_and_input(docker) -> None:
    result = docker.run("exec", "host", "/bin/sh", "-c", "echo out; echo err >&2; exit 3")
    assert (result.returncode, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
    result = docker.run("exec", "-i", "host", "/bin/sh", "-c", "cat; echo", stdin=b"\x00binary\xff")
    assert (result.returncode, result.stdout) == (0, b"\x00binary\xff\n")
    assert docker.run("exec", "host", "cat").stdout == b"", "without -i a command has no input"
    assert docker.run("exec", "host", "/no/such/command").returncode == 127


def test_commands_share_one_channel_and_run_at_once(docker) -> None:
    assert docker.run("exec", "host", "true").returncode == 0
    started = time.monotonic()
    sleepers = [docker.start("exec", "host", "sleep", "2") for _sleeper in range(3)]
    assert [sleeper.wait(timeout=30) for sleeper in sleepers] == [0, 0, 0]
    assert time.monotonic() - started < 5, "the three ran one after the other"
    assert len(docker.daemons()) == 1


def test_other_commands_and_a_host_without_channel_go_to_the_real_docker(docker) -> None:
    assert docker.run("ps", "-a").stdout == b"real docker: ps -a\n"
    result = docker.run("exec", "stopped", "true")
    assert (result.returncode, result.stderr) == (1, b"Error response from daemon: container stopped is not running\n")
    assert docker.daemons() == []


def children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=True)
    return [int(child) for child in found.stdout.split()]


def test_a_command_whose_host_dies_under_it_fails_and_the_next_gets_a_new_channel(docker) -> None:
    assert docker.run("exec", "host", "true").returncode == 0
    [first] = docker.daemons()
    running = docker.start("exec", "host", "sleep", "30")
    time.sleep(1)
    # The host dies: with the stand-in, the daemon's child (the channel's end) and the command it runs.
    [server] = children(first)
    [command] = children(server)
    os.kill(server, signal.SIGKILL)
    os.kill(command, signal.SIGKILL)
    assert running.wait(timeout=30) == 137
    assert b"the test host stopped" in running.stderr.read()
    assert docker.run("exec", "host", "echo", "again").stdout == b"again\n"
    assert docker.daemons() not in ([], [first])


def ended(pid: int) -> bool:
    """Whether PID has exited (a zombie has: its socket is closed), whoever reaps it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_socket_left_by_a_killed_daemon_is_replaced(docker) -> None:
    assert docker.run("exec", "host", "true").returncode == 0
    [first] = docker.daemons()
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not ended(first) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert docker.run("exec", "host", "echo", "again").stdout == b"again\n"
    assert docker.daemons() not in ([], [first])
