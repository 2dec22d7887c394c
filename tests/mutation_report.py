"""Kill rate per mutated module from mutmut's results: `python tests/mutation_report.py [--json FILE]`.

Run in the directory `mutmut run` ran in (the Makefile's work/mutation). mutmut keeps one
`mutants/<module>.py.meta` per mutated module, mapping each mutant to the exit code of its tests;
this reads those and prints, per module, how many mutants the tests killed. A timeout counts as
killed (the mutant hung the tests: they noticed); "no tests" counts as survived (nothing checks
that line). Not a test module: pytest does not collect it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code  # mutmut's own reading of the exit codes

DETECTED = ("killed", "timeout", "segfault", "caught by type check")
UNDETECTED = ("survived", "no tests", "suspicious")


def module_stats(mutants_dir: Path) -> dict[str, Counter]:
    """source path -> Counter of mutmut statuses, for every `<path>.meta` under `mutants_dir`."""
    stats = {}
    for meta in sorted(mutants_dir.rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        stats[str(meta.relative_to(mutants_dir))[: -len(".meta")]] = Counter(status_by_exit_code[c] for c in codes.values())
    return stats


def kill_rate(counts: Counter) -> float | None:
    decided = sum(counts[s] for s in DETECTED + UNDETECTED)
    return sum(counts[s] for s in DETECTED) / decided if decided else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", default="mutants", help="mutmut's output directory (default: mutants)")
    parser.add_argument("--json", help="also write the table as JSON here")
    args = parser.parse_args(argv)
    stats = module_stats(Path(args.mutants))
    if not stats:
        print(f"no mutmut results under {args.mutants}: run `make mutation` first", file=sys.stderr)
        return 1
    print(f"{'module':34} {'mutants':>7} {'killed':>6} {'timeout':>7} {'survived':>8} {'no tests':>8} "
          f"{'unchecked':>9} {'kill rate':>9}")
    for path, c in stats.items():
        rate = kill_rate(c)
        print(f"{path:34} {sum(c.values()):7d} {c['killed']:6d} {c['timeout']:7d} {c['survived']:8d} "
              f"{c['no tests']:8d} {c['not checked']:9d} {'-' if rate is None else f'{100 * rate:.1f} %':>9}")
    if args.json:
        Path(args.json).write_text(json.dumps({p: {**c, "kill_rate": kill_rate(c)} for p, c in stats.items()}, indent=2))
    print("survivors: `mutmut results`; one diff: `mutmut show <name>` (both in this directory)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
