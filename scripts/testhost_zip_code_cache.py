"""Test hosts only: keep the code Python compiles for modules it imports from a zip file.

Ansible sends each module with its module_utils as a zip and Python imports them from it with
zipimport, which compiles every source file on every run and writes no bytecode: about 90 ms of
each module's 150 ms on a test host, most of it for ansible.module_utils.basic. This keeps each
compiled file in a root-only directory, keyed by its source and the interpreter, and gives it the
path it was imported from, so tracebacks name the file as before. scripts/testhost-image.sh loads
it into the system Python of the test-host images through a .pth file; hosts deployed by the
collection never carry it.
"""

import contextlib
import hashlib
import marshal
import os
import sys
import types
import zipimport

CACHE_DIRECTORY = "/var/cache/testhost-zip-code"


def _with_filename(code, filename):
    """Return code and the code objects nested in it as compiled from filename."""
    consts = tuple(
        _with_filename(const, filename) if isinstance(const, types.CodeType) else const for const in code.co_consts
    )
    return code.replace(co_filename=filename, co_consts=consts)


def _compile_source_cached(pathname, source):
    digest = hashlib.sha256(source).hexdigest()
    cached = os.path.join(CACHE_DIRECTORY, f"{digest}.{sys.implementation.cache_tag}")
    try:
        with open(cached, "rb") as stored:
            code = marshal.load(stored)  # noqa: S302 - root-only, written by this module
        if isinstance(code, types.CodeType):
            return _with_filename(code, pathname)
    except (OSError, EOFError, ValueError, TypeError):
        pass
    code = _compile_source(pathname, source)
    partial = f"{cached}.{os.getpid()}"
    try:
        os.makedirs(CACHE_DIRECTORY, mode=0o700, exist_ok=True)
        with open(partial, "wb") as stored:
            marshal.dump(code, stored)
        os.replace(partial, cached)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(partial)
    return code


# zipimport is pure Python since 3.8 and looks _compile_source up in its module globals.
_compile_source = getattr(zipimport, "_compile_source", None)
if _compile_source is not None:
    zipimport._compile_source = _compile_source_cached
