#!/usr/bin/env python3
"""Mutation testing of the pure-logic modules with mutmut 3, and a score per module.

    .venv/bin/python scripts/mutation.py                 # all modules, fail under 85 %
    .venv/bin/python scripts/mutation.py agentkit.redact --survivors
    .venv/bin/python scripts/mutation.py --report-only   # score the last run again

Which files are mutated and which (fast, Docker-free) tests run against the mutants is set in
pyproject.toml's ``[tool.mutmut]``. mutmut keeps its work in ``mutants/`` and re-checks only
what changed; ``--fresh`` starts over. A module's score is killed / all of its mutants: a
mutant no test reaches ("no tests") counts as surviving, a timeout as killed (the change hung
the code). Exit status 1 when a module scores under ``--min``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = (
    "agentkit.tools.schema",
    "agentkit.tools.toolset",
    "agentkit.containers.streamjson",
    "agentkit.config",
    "agentkit.redact",
    "agentkit.workspaces.names",
)
#: mutmut's exit codes per mutant -> our verdict (see mutmut.stats.status_by_exit_code)
KILLED_CODES = {1, 3}
TIMEOUT_CODES = {36, -24, 24, 152, 255}
SURVIVED_CODES = {0}
NO_TESTS_CODES = {5, 33}


def verdict(code: int | None) -> str:
    if code in KILLED_CODES:
        return "killed"
    if code in TIMEOUT_CODES:
        return "timeout"
    if code in SURVIVED_CODES:
        return "survived"
    if code in NO_TESTS_CODES:
        return "no tests"
    if code is None:
        return "not checked"
    return "suspicious"


def results(module: str) -> dict[str, str]:
    """mutant name -> verdict for one module, from mutmut's meta file."""
    meta = ROOT / "mutants" / (module.replace(".", "/") + ".py.meta")
    if not meta.exists():
        return {}
    data = json.loads(meta.read_text())
    return {name: verdict(code) for name, code in data.get("exit_code_by_key", {}).items()}


def report(modules: list[str], minimum: float, show_survivors: bool) -> int:
    failed = False
    print(f"{'module':34} {'mutants':>7} {'killed':>6} {'timeout':>7} {'survived':>8} "
          f"{'no tests':>8} {'other':>5} {'score':>6}")  # fmt: skip
    for module in modules:
        found = results(module)
        counts = Counter(found.values())
        total = len(found)
        detected = counts["killed"] + counts["timeout"]
        other = total - detected - counts["survived"] - counts["no tests"]
        score = 100.0 * detected / total if total else 0.0
        low = total == 0 or score < minimum
        failed |= low
        print(
            f"{module:34} {total:7} {counts['killed']:6} {counts['timeout']:7} "
            f"{counts['survived']:8} {counts['no tests']:8} {other:5} {score:5.1f}%"
            + ("  < minimum" if low else "")
        )
        if show_survivors:
            for name, status in sorted(found.items()):
                if status not in ("killed", "timeout"):
                    print(f"    {status:11} {name}")
    print(f"minimum per module: {minimum:g}%")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help=f"dotted module names (default: {MODULES})")
    parser.add_argument("--min", type=float, default=85.0, help="minimum score per module (%%)")
    parser.add_argument("--children", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--fresh", action="store_true", help="discard mutmut's previous results")
    parser.add_argument("--report-only", action="store_true", help="do not run, only score")
    parser.add_argument("--survivors", action="store_true", help="list mutants not killed")
    args = parser.parse_args(argv)
    modules = args.modules or list(MODULES)
    unknown = [m for m in modules if m not in MODULES]
    if unknown:
        parser.error(f"not configured for mutation (pyproject [tool.mutmut]): {unknown}")
    os.chdir(ROOT)
    if args.fresh:
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    if not args.report_only:
        mutmut = Path(sys.executable).with_name("mutmut")
        globs = [f"{module}.*" for module in modules]
        command = [str(mutmut), "run", "--max-children", str(args.children), *globs]
        # mutmut prints a progress line per mutant: keep only its summary
        run = subprocess.run(command, check=False, stdout=subprocess.DEVNULL)
        if run.returncode != 0:
            print(f"mutmut run failed with exit status {run.returncode}", file=sys.stderr)
            return run.returncode
    return report(modules, args.min, args.survivors)


if __name__ == "__main__":
    sys.exit(main())
