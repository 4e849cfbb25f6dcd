# Copyright: reliable.celery maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The celery_requirement filter: the pip requirement for Celery with the extras a service needs;
the kombu_requirement filter: the kombu minor that goes with it;
the package_specs filter: pip requirement specifiers that reach pip as packages, never as options."""

from __future__ import annotations

import re

from ansible.errors import AnsibleFilterError

# An exact release: 5.7.0, 5.7.0rc1, 2.2.0.post1. Never `latest` or a range: a release is
# identified by what it installs.
EXACT_VERSION = re.compile(r"^[0-9]+(\.[0-9]+)*((a|b|rc|\.post|\.dev)[0-9]+)?$")
_EXTRA = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# The extras whose transports kombu imports for these URL schemes (a missing one crashes the
# worker at start-up: celery[redis] pulls in `packaging`, which kombu 5.7's Redis transport needs).
_SCHEME_EXTRAS = {"redis": "redis", "rediss": "redis", "sentinel": "redis"}
_POOL_EXTRAS = {"gevent": "gevent", "eventlet": "eventlet"}


def celery_requirement(version, schemes=(), extras=(), pools=(), variable="celery_version"):
    """``celery[EXTRAS]==VERSION``: the extras for SCHEMES (URL schemes), POOLS and EXTRAS, sorted."""
    if not isinstance(version, str) or not EXACT_VERSION.match(version):
        raise AnsibleFilterError(
            f"{variable} must be an exact version such as 5.7.0, got {version!r} (not latest or a range:"
            " a release is identified by the exact versions it installs)"
        )
    for extra in extras:
        if not isinstance(extra, str) or not _EXTRA.match(extra):
            raise AnsibleFilterError(f"Celery extras must be names such as redis or sqs, got {extra!r}")
    wanted = set(extras)
    wanted.update(_SCHEME_EXTRAS[scheme] for scheme in schemes if scheme in _SCHEME_EXTRAS)
    wanted.update(_POOL_EXTRAS[pool] for pool in pools if pool in _POOL_EXTRAS)
    return "celery%s==%s" % ("[%s]" % ",".join(sorted(wanted)) if wanted else "", version)


def kombu_requirement(celery_version):
    """``kombu==X.Y.*`` for Celery X.Y.Z: Celery and kombu release their minors together, and a Celery
    requires only ``kombu>=X.Y``; the wrapper's visibility leases rely on one kombu minor's internals."""
    major_minor = ".".join(str(celery_version).split(".")[:2])
    return f"kombu=={major_minor}.*"


# What pip would read differently in a requirements file (where the specifiers go, never argv):
# an option, a comment, a line continuation, an environment variable, a second line.
_SPEC_PROBLEMS = (
    (re.compile(r"^\s*-"), "starts with '-': pip options are not package specifiers"),
    (re.compile(r"[\x00-\x1f\x7f]"), "must be one line without control characters"),
    (re.compile(r"\s[-#]"), "contains ' -' or ' #': pip would read an option or a comment"),
    (re.compile(r"\\\s*$"), "ends with a backslash (a line continuation)"),
    (re.compile(r"\$\{"), "contains '${' (pip expands environment variables)"),
)


def package_specs(specs, variable="packages"):
    """SPECS unchanged if each is one pip requirement specifier (``name==1.0``, ``name @ URL``, a path).

    The error names VARIABLE and the item's index, never its value: a specifier may hold a token.
    """
    if not isinstance(specs, (list, tuple)):
        raise AnsibleFilterError(f"{variable} must be a list of pip requirement specifiers")
    for index, spec in enumerate(specs):
        if not isinstance(spec, str) or not spec.strip():
            raise AnsibleFilterError(f"{variable}[{index}] must be a non-empty pip requirement specifier (a string)")
        for pattern, problem in _SPEC_PROBLEMS:
            if pattern.search(spec):
                raise AnsibleFilterError(
                    f"{variable}[{index}] {problem}; give package specifiers such as name==1.0, name @ URL or a path,"
                    " and index options in a requirements file"
                )
    return list(specs)


class FilterModule:
    def filters(self):
        return {
            "celery_requirement": celery_requirement,
            "kombu_requirement": kombu_requirement,
            "package_specs": package_specs,
        }
