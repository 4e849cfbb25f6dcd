#!/usr/bin/env python3
"""Every role's defaults/main.yml must equal the options of its argument_specs.

For each role: the keys of defaults/main.yml must be exactly the options of the `main`
entry point in meta/argument_specs.yml (public variables only; `__private` ones excluded),
each optional option's `default:` (what ansible-doc shows) must equal its value in
defaults/main.yml, required options have no default, and every option has a description.
Exits 1 with one line per mismatch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml


def load_yaml(path: Path) -> dict:
    if not path.exists():
        return {}
    return yaml.safe_load(path.read_text()) or {}


def problems_of(role: Path) -> list[str]:
    specs_file = role / "meta" / "argument_specs.yml"
    specs = load_yaml(specs_file).get("argument_specs", {})
    if "main" not in specs:
        return [f"{role.name}: {specs_file} has no `main` entry point"]
    options = specs["main"].get("options") or {}
    defaults = {k: v for k, v in load_yaml(role / "defaults" / "main.yml").items() if not k.startswith("__")}
    undocumented = sorted(set(defaults) - set(options))
    problems = [f"{role.name}: default `{name}` is not documented in argument_specs" for name in undocumented]
    for name, spec in sorted(options.items()):
        required = spec.get("required", False)
        if name not in defaults and not required:
            problems.append(f"{role.name}: option `{name}` is neither required nor defaulted in defaults/main.yml")
        if name in defaults and required:
            problems.append(f"{role.name}: option `{name}` is required but also has a default")
        if name in defaults and spec.get("default") != defaults[name]:
            problems.append(
                f"{role.name}: option `{name}` documents default {spec.get('default')!r}"
                f" but defaults/main.yml has {defaults[name]!r}"
            )
        if not spec.get("description"):
            problems.append(f"{role.name}: option `{name}` has no description")
    return problems


def main(roles_dir: Path) -> int:
    roles = sorted(p for p in roles_dir.iterdir() if p.is_dir()) if roles_dir.is_dir() else []
    problems = [problem for role in roles for problem in problems_of(role)]
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"argument_specs: {len(roles)} role(s) checked, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "roles")))
