# Copyright: reliable.celery maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of celery_base's virtualenv releases: which releases to prune, which wheels of a
wheelhouse cannot install on the hosts' Python, the commands that build a release with pip or uv,
and URL credentials masked in the installer's output."""

from __future__ import annotations

import os
import re

from ansible.errors import AnsibleFilterError

# name-version(-build)?-python-abi-platform.whl (PEP 427).
_WHEEL = re.compile(r"^[^-]+-[^-]+(-[0-9][^-]*)?-(?P<python>[^-]+)-(?P<abi>[^-]+)-(?P<platform>[^-]+)\.whl$")
_CPYTHON_ABI = re.compile(r"^cp(?P<minor>3[0-9]+)[dmu]*$")
_LINUX_PLATFORM = re.compile(
    r"^(linux|manylinux1|manylinux2010|manylinux2014|manylinux_[0-9]+_[0-9]+)_(?P<machine>.+)$"
)
# scheme://USERINFO@ : what pip's index URLs and direct references carry credentials in.
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")


def release_prune(directories, markers, processes, current, keep):
    """The release directories to remove: all but CURRENT, the KEEP - 1 most recently completed
    others and those a running process uses (named in PROCESSES, `ps` command lines). The
    releases are the directories beside CURRENT.

    DIRECTORIES are the releases' paths; MARKERS the `.release.json` files of the complete ones
    (dicts with ``path`` and ``mtime``, as ansible.builtin.find returns them). A directory without
    a marker is an interrupted or failed build: it is removed unless a process uses it, and never
    counts as a kept release.
    """
    if not isinstance(keep, int) or keep < 1:
        raise AnsibleFilterError(f"releases to keep must be an integer >= 1, got {keep!r}")
    releases_dir = os.path.dirname(current.rstrip("/"))
    completed = {os.path.dirname(marker["path"]): float(marker["mtime"]) for marker in markers}
    in_use = set()
    pattern = re.compile(re.escape(releases_dir) + r"/([^/\s]+)")
    for line in processes:
        in_use.update(f"{releases_dir}/{name}" for name in pattern.findall(line))
    others = sorted(
        (path for path in completed if path != current and path in directories),
        key=lambda path: (completed[path], path),
        reverse=True,
    )
    kept = {current, *in_use, *others[: keep - 1]}
    return sorted(path for path in directories if path not in kept)


def _fits_python(python_tag, abi_tag, minor):
    if abi_tag == "none":
        return python_tag in ("py3", f"cp3{minor}") or (
            python_tag.startswith("py3") and python_tag[3:].isdigit() and int(python_tag[3:]) <= minor
        )
    if abi_tag == "abi3":
        return python_tag.startswith("cp3") and python_tag[3:].isdigit() and 2 <= int(python_tag[3:]) <= minor
    abi = _CPYTHON_ABI.match(abi_tag)
    return bool(abi) and python_tag == f"cp{abi.group('minor')}" == f"cp3{minor}"


def _fits_platform(platform_tag, machine):
    if platform_tag == "any":
        return True
    linux = _LINUX_PLATFORM.match(platform_tag)
    return bool(linux) and linux.group("machine") == machine


def wheel_mismatches(filenames, python_version, machine):
    """The wheels among FILENAMES (base names; sdists are ignored) that no CPython PYTHON_VERSION
    (``3.11`` or ``3.11.2``) on Linux MACHINE (``x86_64``) installs, by their tags.

    A cheap check by file name: it finds wheels built for another Python, ABI or platform (a
    wheelhouse built on a controller with another Python), not missing dependencies.
    """
    parts = str(python_version).split(".")
    if len(parts) < 2 or parts[0] != "3" or not parts[1].isdigit():
        raise AnsibleFilterError(f"expected a CPython 3 version such as 3.11.2, got {python_version!r}")
    minor = int(parts[1])
    refused = []
    for filename in filenames:
        name = os.path.basename(filename)
        if not name.endswith(".whl"):
            continue
        wheel = _WHEEL.match(name)
        fits = bool(wheel) and any(
            _fits_python(python_tag, abi_tag, minor) and _fits_platform(platform_tag, machine)
            for python_tag in wheel.group("python").split(".")
            for abi_tag in wheel.group("abi").split(".")
            for platform_tag in wheel.group("platform").split(".")
        )
        if not fits:
            refused.append(name)
    return sorted(refused)


INSTALLERS = ("pip", "uv")


def release_uv_dir(install_dir, uv_version):
    """Where uv's UV_VERSION is installed, once per version: INSTALL_DIR/installers/uv-VERSION. pip comes with
    each release."""
    return f"{install_dir}/installers/uv-{uv_version}"


def release_install_commands(installer, build, uv_version, variable):
    """The commands that build a release with INSTALLER (``pip`` or ``uv``), as
    ``{"installer": [{"argv", "creates"}], "venv": argv, "install": argv, "leftovers": paths}``.

    BUILD holds the paths: ``python`` (the host's), ``install_dir``, ``release_dir``, ``build_dir``
    (holding install.txt, what to install) and ``wheelhouse`` (on the controller, or empty; copied
    to BUILD_DIR/wheelhouse, it is the only source). uv is installed once per version, into
    INSTALL_DIR/installers/uv-VERSION, by pip from the same source as the release: a wheelhouse
    must hold its wheel. uv creates a virtualenv without pip and compiles the bytecode as pip
    does; it reads the system's CA certificates, as Debian's pip does, and copies files into the
    release, which never shares them with its cache. The LEFTOVERS are what uv leaves in the release
    and the build removes: a lock file anyone may write (0666) and the marks of a cache directory
    (CACHEDIR.TAG, which backup tools skip, and .gitignore).
    """
    if installer not in INSTALLERS:
        raise AnsibleFilterError(f"{variable} must be one of {', '.join(INSTALLERS)}, got {installer!r}")
    python, release_dir, build_dir = build["python"], build["release_dir"], build["build_dir"]
    sources = ["--no-index", "--find-links", f"{build_dir}/wheelhouse"] if build["wheelhouse"] else []
    requirements = ["-r", f"{build_dir}/install.txt"]
    pip_install = ["install", "--no-input", "--disable-pip-version-check", *sources]
    if installer == "pip":
        return {
            "installer": [],
            "venv": [python, "-m", "venv", release_dir],
            "install": [f"{release_dir}/bin/pip", *pip_install, *requirements],
            "leftovers": [],
        }
    uv_dir = release_uv_dir(build["install_dir"], uv_version)
    uv = f"{uv_dir}/bin/uv"
    return {
        "installer": [
            {"argv": [python, "-m", "venv", uv_dir], "creates": f"{uv_dir}/bin/python"},
            {"argv": [f"{uv_dir}/bin/pip", *pip_install, f"uv=={uv_version}"], "creates": uv},
        ],
        "venv": [uv, "venv", "--quiet", "--no-python-downloads", "--python", python, release_dir],
        "install": [
            *(uv, "pip", "install", "--no-progress", "--system-certs", "--compile-bytecode", "--link-mode", "copy"),
            *("--python", f"{release_dir}/bin/python", *sources, *requirements),
        ],
        "leftovers": [f"{release_dir}/{name}" for name in (".lock", "CACHEDIR.TAG", ".gitignore")],
    }


def redact_urls(text):
    """TEXT with the user information of every URL (``https://user:token@host``) replaced by ``****``."""
    return _URL_USERINFO.sub(r"\g<scheme>****@", str(text))


class FilterModule:
    def filters(self):
        return {
            "release_prune": release_prune,
            "wheel_mismatches": wheel_mismatches,
            "release_install_commands": release_install_commands,
            "release_uv_dir": release_uv_dir,
            "redact_urls": redact_urls,
        }
