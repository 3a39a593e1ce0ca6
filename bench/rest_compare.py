"""REST figures of this tree beside an earlier commit's, measured in the same run.

Checks the earlier commit out into a temporary git worktree, then runs `bench/rest.py` (1, 8 and
32 clients, 20-entry transactions) against SQLite and PostgreSQL, alternating the two trees per
database so both see the same machine, and prints each run's table and the throughput ratios.
Each tree's server runs that tree's code (PYTHONPATH points at it; the virtualenv is shared).

Run: `.venv/bin/python bench/rest_compare.py --before cfd1bdf [--requests 200] [--seconds 40]`
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import machine_line, markdown_table

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^\|\s*(\d+)\s*\|(?:[^|]*\|){5}\s*([\d,.]+)\s*\|")


def run_tree(
    tree: Path, database: str, requests: int, seconds: float
) -> tuple[str, dict[int, float]]:
    """bench/rest.py of `tree` (its own copy, its own code); (output, clients -> tx/s)."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    args = [sys.executable, str(tree / "bench" / "rest.py"), "--requests", str(requests)]
    args += ["--seconds", str(seconds)]
    if database == "postgresql":
        args.append("--postgres")
    done = subprocess.run(args, cwd=tree, env=env, capture_output=True, text=True, check=False)
    output = done.stdout + done.stderr
    rates = {
        int(m.group(1)): float(m.group(2).replace(",", ""))
        for m in map(ROW.match, output.splitlines())
        if m
    }
    return output, rates


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="the earlier commit (hash or ref)")
    parser.add_argument("--requests", type=int, default=200, help="per level")
    parser.add_argument("--seconds", type=float, default=40.0, help="cap per level")
    args = parser.parse_args(argv)
    print(machine_line())
    with tempfile.TemporaryDirectory(prefix="fhir-app-before-") as scratch:
        before = Path(scratch) / "tree"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(before), args.before],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        try:
            rows = []
            for database in ("postgresql", "sqlite"):
                old_out, old = run_tree(before, database, args.requests, args.seconds)
                new_out, new = run_tree(ROOT, database, args.requests, args.seconds)
                print(f"\n### {database}, before ({args.before})\n{old_out}")
                print(f"\n### {database}, this tree\n{new_out}")
                for clients in sorted(set(old) & set(new)):
                    ratio = new[clients] / old[clients] if old[clients] else 0.0
                    rows.append(
                        [
                            database,
                            str(clients),
                            f"{old[clients]:,.1f}",
                            f"{new[clients]:,.1f}",
                            f"{ratio:.2f}",
                        ]
                    )
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, check=False
            )
    header = ("database", "clients", "before tx/s", "now tx/s", "now / before")
    print("\n" + markdown_table(header, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
