"""Imported only when the ``code_release`` task first runs (a lazy import), to show which
release's code a running worker loads."""

VERSION = "1.0.0"
