# Copyright: reliable.celery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What copy_wheelhouse's action plugin (on the controller) and module (on the host) both compute."""

from __future__ import annotations

import functools
import hashlib

CHUNK = 1 << 20


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(functools.partial(handle.read, CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()
