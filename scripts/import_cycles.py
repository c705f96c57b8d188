"""Count import cycles in whyrec: between files and between sub-packages.

Reads every module under src/whyrec as text (nothing is imported or run) and builds the
graph of ``import`` / ``from ... import`` statements, including those inside functions and
under ``if TYPE_CHECKING:``. A cycle group is a strongly connected set of two or more
files (or sub-packages such as ``whyrec.serve``) that reach each other through imports.

    python scripts/import_cycles.py            # figures; exit 1 if there is a cycle
    python scripts/import_cycles.py --verbose  # also list the files of each group
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_graph(src: Path, package: str) -> dict[str, set[str]]:
    files = sorted((src / package).rglob("*.py"))
    modules = {module_name(p, src): p for p in files}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        here = name if is_pkg else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                # ``from pkg import sub`` imports the submodule when there is one
                subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in modules]
                targets = subs if len(subs) == len(node.names) else [mod, *subs]
            for target in targets:
                while target and target not in modules:  # a name inside a module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycle_groups(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of two or more nodes (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    group.append(top)
                    if top == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return groups


def package_graph(graph: dict[str, set[str]], depth: int) -> dict[str, set[str]]:
    def squash(m: str) -> str:
        return ".".join(m.split(".")[:depth])

    # the sub-packages at this depth (a module such as whyrec.errors is not one)
    packages = {squash(m) for m in graph if len(m.split(".")) > depth}
    out: dict[str, set[str]] = {p: set() for p in packages}
    for a, bs in graph.items():
        for b in bs:
            if squash(a) in packages and squash(b) in packages and squash(a) != squash(b):
                out[squash(a)].add(squash(b))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", default=str(Path(__file__).resolve().parents[1] / "src"))
    parser.add_argument("--package", default="whyrec")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    graph = import_graph(Path(args.src), args.package)
    files = cycle_groups(graph)
    packages = cycle_groups(package_graph(graph, 2))
    n_edges = sum(len(v) for v in graph.values())
    print(f"{len(graph)} files, {n_edges} imports between them")
    print(
        f"file cycles: {len(files)} group(s), {sum(len(g) for g in files)} file(s) in a cycle; "
        f"sub-package cycles: {len(packages)} group(s), "
        f"{sum(len(g) for g in packages)} sub-package(s) in a cycle"
    )
    if args.verbose:
        for g in packages:
            print("  packages:", " ".join(g))
        for g in files:
            print("  files:", " ".join(g))
    return 1 if files or packages else 0


if __name__ == "__main__":
    sys.exit(main())
