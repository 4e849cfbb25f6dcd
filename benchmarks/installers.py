#!/usr/bin/env python3
"""Benchmark: what building a release costs with pip and with uv (celery_worker_installer).

In a throwaway container of the suite's test-host image (no systemd needed), builds a release
again and again with the commands the roles run (filter reliable.celery.release_install_commands):
Celery with the Redis extra and the example app from the example wheelhouse (offline), and Celery
with the Redis extra from the index. The first build of each runs with an empty cache. Reports the
wall time and the CPU time (user + system of the commands) of each; uv's own install, once per
host and version, is reported apart. Prints a markdown report; asserts nothing.

    make benchmark PARTS=install
    python benchmarks/installers.py --builds 3 --output /tmp/report.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "playbooks" / "collections"))
from ansible_collections.reliable.celery.plugins.filter.release import (  # noqa: E402
    INSTALLERS,
    release_install_commands,
)

DEBIAN = {"bookworm": "Debian 12", "trixie": "Debian 13"}[os.environ.get("TESTHOST_SUITE", "bookworm")]
INSTALL_DIR = "/opt/celery"
WHEELHOUSE = "/root/wheelhouse"
CELERY = "celery[redis]==5.7.0"
SOURCES = {
    "wheelhouse": [CELERY, "reliable-celery-example==2.0.0"],
    "index": [CELERY],
}
# Runs in the container with its Python: each step's wall time and its commands' CPU time.
DRIVER = """
import json, os, shutil, subprocess, sys, time
steps = json.loads(sys.stdin.read())
results = []
for step in steps:
    for path in step.get("remove", []):
        shutil.rmtree(path, ignore_errors=True)
    if "write" in step:
        os.makedirs(os.path.dirname(step["write"][0]), exist_ok=True)
        with open(step["write"][0], "w") as file:
            file.write(step["write"][1])
    before, started = os.times(), time.monotonic()
    for argv in step["run"]:
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    results.append({"name": step["name"], "wall": time.monotonic() - started, "cpu": cpu})
print(json.dumps(results))
"""


def build_steps(installer: str, source: str, builds: int) -> list[dict]:
    """The driver's steps: uv's install (for uv), then BUILDS releases, the first with an empty cache."""
    release_dir, build_dir = f"{INSTALL_DIR}/releases/bench", f"{INSTALL_DIR}/.build-bench"
    paths = {
        "python": "/usr/bin/python3",
        "install_dir": INSTALL_DIR,
        "release_dir": release_dir,
        "build_dir": build_dir,
        "wheelhouse": WHEELHOUSE if source == "wheelhouse" else "",
    }
    commands = release_install_commands(installer, paths, UV_VERSION, "installer")
    steps = []
    if commands["installer"]:
        # The wheelhouse's copy, where the installer's own install reads it.
        copy = [["mkdir", "-p", build_dir], ["cp", "-rT", WHEELHOUSE, f"{build_dir}/wheelhouse"]]
        steps.append({"name": "setup", "run": copy})
        steps.append({"name": "installer", "run": [step["argv"] for step in commands["installer"]]})
    for build in range(builds):
        cold = ["/root/.cache"] if build == 0 else []
        steps.append({
            "name": f"build {build + 1}",
            "remove": [release_dir, *cold],
            "write": [f"{build_dir}/install.txt", "".join(f"{spec}\n" for spec in SOURCES[source])],
            "run": [["cp", "-rT", WHEELHOUSE, f"{build_dir}/wheelhouse"], commands["venv"], commands["install"]],
        })  # fmt: skip
    return steps


def measure(image: str, wheelhouse: Path, builds: int) -> dict[tuple[str, str], list[dict]]:
    name = f"rc-bench-installers-{os.getpid()}"
    subprocess.run(
        ["docker", "run", "-d", "--rm", "--name", name, image, "sleep", "infinity"], check=True, capture_output=True
    )
    try:
        subprocess.run(["docker", "cp", f"{wheelhouse}/.", f"{name}:{WHEELHOUSE}"], check=True, capture_output=True)
        results = {}
        for installer in INSTALLERS:
            for source in SOURCES:
                steps = build_steps(installer, source, builds)
                run = subprocess.run(
                    ["docker", "exec", "-i", name, "python3", "-c", DRIVER],
                    input=json.dumps(steps), capture_output=True, text=True, check=True,
                )  # fmt: skip
                results[installer, source] = [step for step in json.loads(run.stdout) if step["name"] != "setup"]
                subprocess.run(["docker", "exec", name, "rm", "-rf", INSTALL_DIR, "/root/.cache"], check=True)
        return results
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def report(results: dict[tuple[str, str], list[dict]], builds: int) -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## Release builds per installer, {DEBIAN} — {now}",
        "",
        f"`benchmarks/installers.py`: {builds} builds of one release per installer and source in a container of the"
        " test-host image, with the roles' commands; the first with an empty cache. Wall / CPU seconds (user + system"
        " of the commands). uv's own install (once per host and version, by pip) is apart.",
        "",
        "| installer | source | installer's install | first build | later builds (median) |",
        "|---|---|---|---|---|",
    ]
    for (installer, source), steps in results.items():
        own = next((step for step in steps if step["name"] == "installer"), None)
        built = [step for step in steps if step["name"].startswith("build")]
        later = built[1:] or built
        cells = [
            f"{own['wall']:.1f} / {own['cpu']:.1f}" if own else "-",
            f"{built[0]['wall']:.1f} / {built[0]['cpu']:.1f}",
            f"{statistics.median(s['wall'] for s in later):.1f} / {statistics.median(s['cpu'] for s in later):.1f}",
        ]
        lines.append(f"| {installer} | {source} ({', '.join(SOURCES[source])}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def uv_version() -> str:
    for line in (REPO / "roles" / "celery_base" / "vars" / "main.yml").read_text().splitlines():
        if line.startswith("__celery_base_uv_version:"):
            return line.split(":", 1)[1].strip().strip('"')
    raise SystemExit("no __celery_base_uv_version in roles/celery_base/vars/main.yml")


UV_VERSION = uv_version()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builds", type=int, default=3)
    parser.add_argument("--output", type=Path, help="also write the report to this file")
    args = parser.parse_args()
    wheelhouse = Path(os.environ["RELIABLE_CELERY_EXAMPLE_WHEELHOUSE"])
    text = report(measure(os.environ["TESTHOST_IMAGE"], wheelhouse, args.builds), args.builds)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
