# Copyright: reliable.celery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Broker versions as the platform vars give them (MAJOR.MINOR), for comparisons."""

from __future__ import annotations


def major_minor(version):
    """(MAJOR, MINOR) of '8.1' or '4.0.5'; ValueError for anything else."""
    parts = str(version).split(".")
    if len(parts) < 2:
        raise ValueError(f"a version must be MAJOR.MINOR, got {version!r}")
    try:
        return int(parts[0]), int(parts[1])
    except ValueError:
        raise ValueError(f"a version must be MAJOR.MINOR, got {version!r}") from None
