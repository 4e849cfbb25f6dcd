"""scripts/testhost_zip_code_cache.py, loaded as the test hosts load it, in a Python of its own with
the cache in a temporary directory: modules imported from a zip as Ansible sends them."""

import hashlib
import marshal
import subprocess
import sys
import zipfile
from pathlib import Path

CACHE_MODULE = Path(__file__).parents[3] / "scripts" / "testhost_zip_code_cache.py"
IMPORTER = """
import importlib.util, sys, traceback
spec = importlib.util.spec_from_file_location("testhost_zip_code_cache", sys.argv[1])
cache = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cache)
cache.CACHE_DIRECTORY = sys.argv[2]
sys.path.insert(0, sys.argv[3])
import payload.module
print(payload.module.answer())
try:
    payload.module.fail()
except RuntimeError:
    print(traceback.extract_tb(sys.exc_info()[2])[-1].filename)
"""


def payload(path: Path, answer: int) -> Path:
    """A zip holding payload/module.py, as an AnsiballZ payload holds a module, at path."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("payload/__init__.py", "")
        archive.writestr(
            "payload/module.py",
            f"def answer():\n    return {answer}\n\n\ndef fail():\n    raise RuntimeError('from the zip')\n",
        )
    return path


def run(cache: Path, zip_path: Path) -> list[str]:
    result = subprocess.run(  # noqa: S603 - a fixed command line
        [sys.executable, "-c", IMPORTER, str(CACHE_MODULE), str(cache), str(zip_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.split()


def test_a_second_import_runs_the_stored_code_and_names_its_own_zip(tmp_path):
    cache = tmp_path / "cache"
    first = payload(tmp_path / "first.zip", 1)
    assert run(cache, first) == ["1", f"{first}/payload/module.py"]
    assert cache.stat().st_mode & 0o777 == 0o700
    # The stored code of module.py replaced by code that answers 3: only an import that runs the
    # stored code answers 3.
    source = zipfile.ZipFile(first).read("payload/module.py")
    stored = cache / f"{hashlib.sha256(source).hexdigest()}.{sys.implementation.cache_tag}"
    stored.write_bytes(marshal.dumps(compile(source.replace(b"return 1", b"return 3"), "module.py", "exec")))

    second = payload(tmp_path / "second.zip", 1)
    assert run(cache, second) == ["3", f"{second}/payload/module.py"]


def test_changed_source_is_compiled_again(tmp_path):
    cache = tmp_path / "cache"
    run(cache, payload(tmp_path / "first.zip", 1))
    assert run(cache, payload(tmp_path / "changed.zip", 2))[0] == "2"
    assert len(list(cache.iterdir())) == 3


def test_an_unwritable_or_damaged_cache_still_imports(tmp_path):
    unwritable = tmp_path / "file"
    unwritable.write_text("")
    assert run(unwritable / "cache", payload(tmp_path / "a.zip", 1))[0] == "1"

    cache = tmp_path / "cache"
    run(cache, payload(tmp_path / "b.zip", 1))
    for number, stored in enumerate(sorted(cache.iterdir())):
        stored.write_bytes(marshal.dumps(1) if number else b"\x00not marshal")
    assert run(cache, payload(tmp_path / "c.zip", 1))[0] == "1"
