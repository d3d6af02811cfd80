#!/usr/bin/env python3
"""Import circles between the files of each crate, read from the `use` graph.

An edge A -> B means file A names a path inside file B (`use crate::x::y`, `super::`,
`self::`, or a fully qualified `crate::x::y` in code). A bare `child::item` names a child module's file. A file naming a module that
encloses it (`use super::*` from a child, `crate::vm` from `vm/boot.rs` when that
resolves to `vm/mod.rs`) is not counted: a child module always sees its parents.
Strongly connected components of more than one file are printed; exit 1 if any.

    scripts/import-cycles.py [-v] [crates/...]     (-v: the edges inside each circle)
"""

import re
import sys
from pathlib import Path

PATH_RE = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE_GROUP_RE = re.compile(r"\buse\s+(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^;]*)\};", re.S)


def module_of(root: Path, f: Path) -> tuple:
    rel = f.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def strip(src: str) -> str:
    src = re.sub(r"//[^\n]*", "", src)
    src = re.sub(r"/\*.*?\*/", "", src, flags=re.S)
    src = re.sub(r'"(?:\\.|[^"\\])*"', '""', src)
    # Test modules may import anything; they are not part of the module graph.
    cut = re.search(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", src)
    return src[: cut.start()] if cut else src


def paths_in(src: str):
    for m in USE_GROUP_RE.finditer(src):
        head, rest, body = m.group(1), m.group(2), m.group(3)
        for item in re.split(r",", re.sub(r"\{[^}]*\}", "", body)):
            item = item.strip().split(" as ")[0].strip()
            if item and item != "self":
                yield head, [p for p in (rest + "::" + item).split("::") if p]
        src = src.replace(m.group(0), "")
    for m in PATH_RE.finditer(src):
        yield m.group(1), [p for p in m.group(2).split("::") if p]


def crate_graph(crate: Path):
    src_root = crate / "src"
    files = {module_of(src_root, f): f for f in src_root.rglob("*.rs")}
    # Non-mod files own a module only if a parent declares it; tests/*.rs are not here.
    edges = {m: set() for m in files}
    for mod, f in files.items():
        text = strip(f.read_text())
        # A bare `child::item` names a child module of this file.
        for m in re.finditer(r"(?<![:\w])([a-z_][a-z0-9_]*)::", text):
            child = mod + (m.group(1),)
            if child in files:
                edges[mod].add(child)
        for head, segs in paths_in(text):
            base = () if head == "crate" else mod if head == "self" else mod[:-1]
            while segs and segs[0] == "super":
                segs = segs[1:]
                base = base[:-1]
            full = base + tuple(segs)
            # Longest prefix that is a file.
            target = None
            for i in range(len(full), -1, -1):
                if full[:i] in files:
                    target = full[:i]
                    break
            if target is None or target == mod:
                continue
            if mod[: len(target)] == target:  # an enclosing module
                continue
            edges[mod].add(target)
    return files, edges


def sccs(edges):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    sys.setrecursionlimit(10000)
    for v in edges:
        if v not in index:
            visit(v)
    return out


def main():
    args = sys.argv[1:]
    verbose = "-v" in args
    crates = [Path(a) for a in args if a != "-v"] or sorted(Path("crates").iterdir())
    found = 0
    for crate in crates:
        if not (crate / "src").is_dir():
            continue
        files, edges = crate_graph(crate)
        for comp in sccs(edges):
            if len(comp) > 1:
                found += 1
                names = sorted(str(files[m].relative_to(crate / "src")) for m in comp)
                print(f"{crate.name}: {' <-> '.join(names)}")
                if verbose:
                    for a in sorted(comp):
                        for b in sorted(edges[a] & set(comp)):
                            print(f"    {files[a].relative_to(crate / 'src')} -> {files[b].relative_to(crate / 'src')}")
    if found:
        print(f"{found} import circle(s)")
        return 1
    print("no import circles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
