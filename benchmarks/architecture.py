"""The shape of ``lsub_helpers``: longest modules, longest functions, largest parameter counts, and what
still returns a long tuple.  Reads the source with ``ast`` (nothing is imported or run).

    python benchmarks/architecture.py [--rev REV] [--before REV] [--top N] [--out benchmarks/results/architecture.md]

``--rev`` reads the package as it is at a git revision instead of the working tree; ``--before`` adds the
same tables for an earlier revision below, for comparison.  Counts: a module's lines are its physical lines; a function's lines run from its ``def`` (decorators
excluded) to its last line; its parameters are every name it takes (``self``/``cls`` excluded, ``*args`` and
``**kwargs`` counted once each).  A function wrapped by ``keyword_options`` also accepts every field of its
options dataclass as a keyword: those are listed in the column *with options fields*.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "lsub_helpers"


@dataclass(frozen=True)
class Function:
    module: str
    name: str  # Class.method for methods
    lines: int
    params: int
    options: str | None  # the options dataclass of @keyword_options, if any
    tuple_return: int  # the longest tuple literal it returns (0: none)


def _sources(rev: str | None) -> dict[str, str]:
    if rev is None:
        return {str(p.relative_to(ROOT)): p.read_text() for p in sorted((ROOT / PACKAGE).rglob("*.py"))}
    names = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "-r", "--name-only", rev, PACKAGE], check=True,
                           capture_output=True, text=True).stdout.split()
    return {n: subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{n}"], check=True, capture_output=True,
                              text=True).stdout for n in names if n.endswith(".py")}


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = fn.args
    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
    names = [n for n in names if n not in ("self", "cls")]
    return len(names) + (a.vararg is not None) + (a.kwarg is not None)


def _options_of(fn) -> str | None:
    for d in fn.decorator_list:
        if isinstance(d, ast.Call) and getattr(d.func, "id", None) == "keyword_options" and d.args:
            return getattr(d.args[0], "id", None)
    return None


def _tuple_return(fn) -> int:
    longest = 0
    for node in ast.walk(fn):
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple):
            longest = max(longest, len(node.value.elts))
    return longest


def _fields(tree: ast.Module) -> dict[str, int]:
    """Annotated fields per class (dataclass fields) of one module."""
    return {c.name: sum(isinstance(s, ast.AnnAssign) for s in c.body) for c in tree.body if isinstance(c, ast.ClassDef)}


def survey(rev: str | None = None) -> tuple[dict[str, int], list[Function], dict[str, int]]:
    modules, functions, fields = {}, [], {}
    for name, src in _sources(rev).items():
        modules[name] = len(src.splitlines())
        tree = ast.parse(src)
        fields.update(_fields(tree))

        def visit(node, prefix=""):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    functions.append(Function(name, prefix + child.name, child.end_lineno - child.lineno + 1,
                                              _params(child), _options_of(child), _tuple_return(child)))
                    visit(child, prefix + child.name + ".")
                elif isinstance(child, ast.ClassDef):
                    visit(child, prefix + child.name + ".")

        visit(tree)
    return modules, functions, fields


def report(rev: str | None, top: int, *, level: str = "#", command: str | None = None) -> str:
    modules, functions, fields = survey(rev)
    command = command or f"python benchmarks/architecture.py --rev {rev or 'HEAD'} --top {top}"
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", rev or "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    out = [f"{level} Architecture of `{PACKAGE}` at {head}{' (working tree)' if rev is None else ''}", "",
           f"- date: {now}; machine: {platform.node()} ({platform.platform()}), Python {platform.python_version()}",
           f"- made by `{command}` (reads the source with `ast`)",
           f"- {len(modules)} modules, {sum(modules.values())} lines, {len(functions)} functions and methods", "",
           f"{level}# Longest modules (top {top})", "", "| module | lines |", "|---|---|"]
    out += [f"| `{m}` | {n} |" for m, n in sorted(modules.items(), key=lambda kv: -kv[1])[:top]]
    out += ["", f"{level}# Longest functions (top {top})", "", "| function | module | lines | parameters |", "|---|---|---|---|"]
    out += [f"| `{f.name}` | `{f.module}` | {f.lines} | {f.params} |"
            for f in sorted(functions, key=lambda f: -f.lines)[:top]]
    out += ["", f"{level}# Largest parameter counts (top {top})", "",
            "| function | module | parameters | with options fields |", "|---|---|---|---|"]
    for f in sorted(functions, key=lambda f: (-f.params, f.name))[:top]:
        extra = f"{f.params - 1 + fields.get(f.options, 0)} (`{f.options}`)" if f.options else ""
        out.append(f"| `{f.name}` | `{f.module}` | {f.params} | {extra} |")
    wrapped = [f for f in functions if f.options]
    if wrapped:
        out += ["", "Functions taking an options dataclass (`options=` or each field as a keyword): "
                + ", ".join(f"`{f.name}` ({f.options}, {fields.get(f.options, 0)} fields)" for f in wrapped) + "."]
    tuples = sorted((f for f in functions if f.tuple_return >= 4), key=lambda f: -f.tuple_return)
    out += ["", f"{level}# Functions returning a tuple of 4 or more", "", "| function | module | tuple length |", "|---|---|---|"]
    out += [f"| `{f.name}` | `{f.module}` | {f.tuple_return} |" for f in tuples] or ["| (none) | | |"]
    return "\n".join(out) + "\n"


def duplicates() -> str:
    """The output of ``duplicates --repo lsub_helpers`` (a tool of the development machine), as a section."""
    exe = shutil.which("duplicates")
    if exe is None:
        return "## Repeated blocks\n\n`duplicates` is not on this machine's PATH.\n"
    out = subprocess.run([exe, "--repo", str(ROOT / PACKAGE), "--most", "40"], capture_output=True, text=True,
                         timeout=300).stdout.strip()
    return f"## Repeated blocks (`duplicates --repo {PACKAGE} --most 40`)\n\n```\n{out}\n```\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rev", help="read the package at this git revision instead of the working tree")
    ap.add_argument("--before", help="add the same tables for this earlier revision")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--duplicates", action="store_true",
                    help="add what the `duplicates` command (if on the PATH) finds in the package")
    ap.add_argument("--out", help="write the markdown here (default: print it)")
    args = ap.parse_args(argv)
    command = " ".join(["python", "benchmarks/architecture.py"] + list(argv if argv is not None else sys.argv[1:]))
    text = report(args.rev, args.top, command=command)
    if args.duplicates:
        text += "\n" + duplicates()
    if args.before:
        text += "\n" + report(args.before, args.top, level="##")
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
