"""List the functions in src/whyrec whose body is longer than a limit (80 lines by default).

Reads every module as text with ``ast`` (nothing is imported or run). A function's length
is its body: from the first line after the signature (its docstring included) to its last
line, so a typer command's long parameter list does not count but its body does. Nested
functions count in their own right and as lines of the function around them.

    python scripts/long_functions.py             # exit 1 if a function is too long
    python scripts/long_functions.py --top 10    # also the ten longest, whatever their size

The functions in ``WAIVED`` were over the limit when the check began; each may not grow
past the length written beside it, and leaves the list once it is split (a waived
function at or under the limit is reported, so the list only shrinks).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

#: "file qualified.name" → body lines when the check began: to be split, never to grow.
WAIVED: dict[str, int] = {}


def body_lengths(path: Path, root: Path) -> list[tuple[int, str]]:
    """(body lines, "file:line name") of every function and method in one file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                length = child.end_lineno - child.body[0].lineno + 1
                found.append((length, f"{path.relative_to(root).as_posix()}:{child.lineno} {name}"))
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", default=str(Path(__file__).resolve().parents[1] / "src"))
    parser.add_argument("--package", default="whyrec")
    parser.add_argument("--max-lines", type=int, default=80)
    parser.add_argument("--top", type=int, default=0, help="also list the N longest")
    args = parser.parse_args()
    root = Path(args.src)
    lengths = sorted(
        (
            item
            for p in sorted((root / args.package).rglob("*.py"))
            for item in body_lengths(p, root)
        ),
        key=lambda item: (-item[0], item[1]),
    )
    too_long, waived, stale = [], [], []
    for length, where in lengths:
        key = "{} {}".format(where.split(":", 1)[0], where.split(" ", 1)[1])
        limit = WAIVED.get(key)
        if limit is not None and length <= args.max_lines:
            stale.append((length, where))
        elif limit is not None and length <= limit:
            waived.append((length, where))
        elif length > args.max_lines:
            too_long.append((length, where))
    print(
        f"{len(lengths)} functions; {len(too_long)} with a body over {args.max_lines} lines"
        f" ({len(waived)} more waived until they are split)"
        + (f"; the longest: {lengths[0][0]} lines ({lengths[0][1]})" if lengths else "")
    )
    for length, where in too_long:
        print(f"  {length:4d}  {where}  (split it: over {args.max_lines} lines)")
    for length, where in stale:
        print(f"  {length:4d}  {where}  (no longer long: remove it from WAIVED)")
    shown = waived if len(waived) >= args.top else lengths[: args.top]
    for length, where in shown:
        print(f"  {length:4d}  {where}")
    return 1 if too_long or stale else 0


if __name__ == "__main__":
    sys.exit(main())
