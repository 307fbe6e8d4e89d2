"""Print the README's Quick start commands, so CI runs exactly what the README says.

Usage: python3 .ci/readme_commands.py [demo|test]

The Quick start section holds one fenced shell block with exactly two
commands: the first runs the main job, the second runs the tests.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def quick_start_commands(text: str) -> list[str]:
    section = re.search(r"^## Quick start\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    if not section:
        raise SystemExit("README.md has no '## Quick start' section")
    blocks = re.findall(r"^```(?:sh|bash|shell)?\s*$(.*?)^```\s*$", section.group(1), re.M | re.S)
    if len(blocks) != 1:
        raise SystemExit(f"Quick start must have exactly one command block, found {len(blocks)}")
    lines = [ln.strip() for ln in blocks[0].splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


def main() -> int:
    commands = quick_start_commands(README.read_text())
    if len(commands) != 2:
        raise SystemExit(f"Quick start must have exactly two commands, found {len(commands)}: {commands}")
    which = sys.argv[1] if len(sys.argv) > 1 else "test"
    print(commands[0] if which == "demo" else commands[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
