#!/usr/bin/env python3
"""Every role's defaults/main.yml must equal the options of its argument_specs.

For each role: the keys of defaults/main.yml must be exactly the options of its entry points
in meta/argument_specs.yml (`main`, and any other such as an internal role's `unit`; public
variables only, `__private` ones excluded), each optional option's `default:` (what ansible-doc
shows) must equal its value in defaults/main.yml, required options have no default, and every
option has a description.
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
    defaults = {k: v for k, v in load_yaml(role / "defaults" / "main.yml").items() if not k.startswith("__")}
    documented = {name for entry in specs.values() for name in entry.get("options") or {}}
    undocumented = sorted(set(defaults) - documented)
    problems = [f"{role.name}: default `{name}` is not documented in argument_specs" for name in undocumented]
    for entry_point, entry in sorted(specs.items()):
        problems += option_problems(f"{role.name} ({entry_point})", entry.get("options") or {}, defaults)
    return problems


def option_problems(where: str, options: dict, defaults: dict) -> list[str]:
    problems = []
    for name, spec in sorted(options.items()):
        required = spec.get("required", False)
        if name not in defaults and not required:
            problems.append(f"{where}: option `{name}` is neither required nor defaulted in defaults/main.yml")
        if name in defaults and required:
            problems.append(f"{where}: option `{name}` is required but also has a default")
        if name in defaults and spec.get("default") != defaults[name]:
            problems.append(
                f"{where}: option `{name}` documents default {spec.get('default')!r}"
                f" but defaults/main.yml has {defaults[name]!r}"
            )
        if not spec.get("description"):
            problems.append(f"{where}: option `{name}` has no description")
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
