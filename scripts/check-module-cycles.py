#!/usr/bin/env python3
"""Fails (exit 1) when the modules of a kiln crate depend on each other in a circle.

For every crate root (lib.rs, main.rs, src/bin/*.rs, tests/*.rs, benches/*.rs) of the crates
below, the module tree is read from the `mod` declarations, and each module's dependencies from
its `use crate::…`, `use super::…`, `use self::…` (and a bare `use child::…`) statements and the
inline `crate::…` / `super::…` paths of its code (comments and string literals are ignored).
A path names the longest module it reaches, following the `pub use` re-exports of the modules
on the way (`crate::JobError` → `crate::error`).

Each edge is collapsed to the dependency between sibling modules: `a::x` using `a::y::z`
counts as `a::x → a::y`. A module using its own descendant (a parent declaring or re-exporting
a child) or its own ancestor is not an edge. Test code is left out: `#[cfg(test)]` modules and
files named tests.rs or testutil.rs.

Usage: scripts/check-module-cycles.py [--edges] [REPO_ROOT]   (--edges: print every edge)   (python3, standard library only)
"""

import os
import re
import sys

CRATES = ["worker", "jobs", "kernels", "router-client", "tests", "benches"]
TEST_FILES = {"tests.rs", "testutil.rs"}


def strip_code(text):
    """Blanks comments, string and char literals (keeping newlines and offsets)."""
    out = list(text)
    i, n = 0, len(text)

    def blank(a, b):
        for k in range(a, b):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            blank(i, j)
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            blank(i, j)
            i = j
        elif c in "rb" and re.match(r'(?:br|r)#*"', text[i:i + 260]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'(?:br|r)(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            blank(i, j)
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            blank(i, j + 1)
            i = j + 1
        elif c == "'":
            m = re.match(r"'(?:\\(?:x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\}|.)|[^\\'])'", text[i:])
            if m:
                blank(i, i + m.end())
                i += m.end()
            else:
                i += 1  # a lifetime
        else:
            i += 1
    return "".join(out)


def matching(text, i, open_c, close_c):
    """Index just past the bracket matching the one at `i`."""
    depth = 0
    for j in range(i, len(text)):
        if text[j] == open_c:
            depth += 1
        elif text[j] == close_c:
            depth -= 1
            if depth == 0:
                return j + 1
    return len(text)


def attributes_before(text, pos):
    """The outer attributes (`#[...]`) right before `pos`, and any `pub(...)`/`pub` in between."""
    attrs = []
    k = pos
    while True:
        before = text[:k].rstrip()
        m = re.search(r"pub(\s*\([^)]*\))?$", before)
        if m:
            k = m.start()
            continue
        if not before.endswith("]"):
            return attrs
        depth, j = 0, len(before) - 1
        while j >= 0:
            if before[j] == "]":
                depth += 1
            elif before[j] == "[":
                depth -= 1
                if depth == 0:
                    break
            j -= 1
        if j <= 0 or before[j - 1] != "#":
            return attrs
        attrs.append(before[j - 1:])
        k = j - 1


def is_test_gated(attrs):
    return any("cfg(test)" in re.sub(r"\s+", "", a) for a in attrs)


def line_of(text, pos):
    return text.count("\n", 0, pos) + 1


def expand_use_tree(tree):
    """`a::{b, c::{self, D as E}}` → [[a, b], [a, c], [a, c, D]] (a glob ends the path)."""
    tree = re.sub(r"\s*(::|\{|\}|,)\s*", r"\1", tree.strip())
    out = []

    def split_top(body):
        parts, depth, cur = [], 0, ""
        for ch in body:
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
                continue
            depth += ch == "{"
            depth -= ch == "}"
            cur += ch
        parts.append(cur)
        return [p for p in parts if p]

    def walk(prefix, s):
        brace = s.find("{")
        if brace >= 0:
            head = [p for p in s[:brace].split("::") if p]
            body = s[brace + 1 : matching(s, brace, "{", "}") - 1]
            for part in split_top(body):
                walk(prefix + head, part)
            return
        s = re.split(r"\s+as\s+", s)[0]
        segs = [p for p in s.split("::") if p]
        while segs and segs[-1] in ("self", "*"):
            segs = segs[:-1]
        out.append(prefix + segs)

    walk([], tree)
    return out


class Crate:
    def __init__(self, name, root_file):
        self.name = name
        self.root_file = root_file
        self.files = {}  # module path tuple -> (file, cleaned text, raw text)
        self.inline = []  # (file, start, end, module path, excluded)
        self.modules = set()
        self.reexports = {}  # module -> {name: absolute path list}
        self.load(root_file, ())

    def load(self, path, mod):
        try:
            raw = open(path, encoding="utf-8").read()
        except OSError:
            return
        clean = strip_code(raw)
        self.files[mod] = (path, clean)
        self.modules.add(mod)
        base = os.path.basename(path)
        if base in ("lib.rs", "main.rs", "mod.rs") or mod == ():
            child_dir = os.path.dirname(path)
        else:
            child_dir = os.path.join(os.path.dirname(path), base[:-3])
        # Inline module blocks first (their `mod x;` children live under this file's dir + x).
        regions = []
        for m in re.finditer(r"\bmod\s+([A-Za-z_]\w*)\s*([;{])", clean):
            name, kind = m.group(1), m.group(2)
            gated = is_test_gated(attributes_before(clean, m.start()))
            inner = [r for r in regions if r[0] <= m.start() < r[1]]
            if kind == "{":
                end = matching(clean, m.end() - 1, "{", "}")
                parent = inner[-1][2] if inner else mod
                excluded = gated or name == "tests" or any(r[3] for r in inner)
                regions.append((m.end() - 1, end, parent + (name,), excluded))
                if not excluded:
                    self.modules.add(parent + (name,))
                continue
            if gated or any(r[3] for r in inner) or name + ".rs" in TEST_FILES:
                continue
            parent = inner[-1][2] if inner else mod
            sub = os.path.join(child_dir, *[p for p in parent[len(mod):]])
            for cand in (os.path.join(sub, name + ".rs"), os.path.join(sub, name, "mod.rs")):
                if os.path.exists(cand):
                    self.load(cand, parent + (name,))
                    break
        for r in regions:
            self.inline.append((path, r[0], r[1], r[2], r[3]))

    def scope_at(self, path, mod, pos):
        """The module a position of a file belongs to, or None inside excluded (test) code."""
        best = None
        for f, a, b, m, ex in self.inline:
            if f == path and a <= pos < b:
                if ex:
                    return None
                if best is None or len(m) > len(best):
                    best = m
        return best if best is not None else mod

    def absolute(self, scope, segs):
        """A `use`/inline path's segments made absolute from `scope`; None if external."""
        if not segs:
            return None
        head = segs[0]
        if head == "crate":
            return list(segs[1:])
        if head in ("super", "self"):
            cur = list(scope)
            rest = list(segs)
            while rest and rest[0] in ("super", "self"):
                if rest[0] == "super":
                    if not cur:
                        return None
                    cur.pop()
                rest.pop(0)
            return cur + rest
        if tuple(scope) + (head,) in self.modules:
            return list(scope) + list(segs)
        return None

    def resolve(self, abs_path, depth=0):
        """The longest module an absolute path reaches, following `pub use` re-exports."""
        cur = ()
        for i, seg in enumerate(abs_path):
            if cur + (seg,) in self.modules:
                cur = cur + (seg,)
                continue
            target = self.reexports.get(cur, {}).get(seg)
            if target is not None and depth < 8:
                return self.resolve(target + abs_path[i + 1 :], depth + 1)
            break
        return cur

    def uses(self):
        """(scope, absolute path, file, line, is_reexport) for every use and inline path."""
        found = []
        for mod, (path, clean) in self.files.items():
            for m in re.finditer(r"\buse\s+([^;]+);", clean):
                scope = self.scope_at(path, mod, m.start())
                if scope is None:
                    continue
                before = clean[: m.start()].rstrip()
                public = bool(re.search(r"\bpub(\s*\([^)]*\))?$", before))
                for segs in expand_use_tree(m.group(1)):
                    ap = self.absolute(scope, segs)
                    if ap is not None:
                        found.append((scope, ap, path, line_of(clean, m.start()), public))
            use_spans = [(m.start(), m.end()) for m in re.finditer(r"\buse\s+([^;]+);", clean)]
            for m in re.finditer(r"(?<![\w:])((?:crate|super|self)(?:\s*::\s*\w+)+)", clean):
                if any(a <= m.start() < b for a, b in use_spans):
                    continue  # read above, as a `use` statement
                scope = self.scope_at(path, mod, m.start())
                if scope is None:
                    continue
                segs = [s for s in re.split(r"\s*::\s*", m.group(1)) if s]
                ap = self.absolute(scope, segs)
                if ap is not None:
                    found.append((scope, ap, path, line_of(clean, m.start()), False))
        return found

    def edges(self):
        found = self.uses()
        for scope, ap, _, _, public in found:
            if public and ap:
                self.reexports.setdefault(scope, {})[ap[-1]] = ap
        edges = {}
        for scope, ap, path, line, _ in found:
            target = self.resolve(ap)
            src = tuple(scope)
            k = 0
            while k < len(src) and k < len(target) and src[k] == target[k]:
                k += 1
            if k == len(src) or k == len(target):
                continue  # an ancestor or a descendant: not a sibling dependency
            a, b = src[: k + 1], target[: k + 1]
            edges.setdefault((a, b), (path, line))
        return edges


def find_cycles(edges):
    graph = {}
    for a, b in edges:
        graph.setdefault(a, []).append(b)
        graph.setdefault(b, [])
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
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
            if len(comp) > 1:
                sccs.append(set(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            strong(v)
    cycles = []
    for comp in sccs:
        comp_edges = sorted((a, b) for a, b in edges if a in comp and b in comp)
        start = min(comp)
        # Shortest cycle through `start` inside the component (BFS back to it).
        prev, queue, found = {start: None}, [start], None
        while queue and found is None:
            v = queue.pop(0)
            for w in sorted(graph[v]):
                if w not in comp:
                    continue
                if w == start:
                    found = v
                    break
                if w not in prev:
                    prev[w] = v
                    queue.append(w)
        path = [start]
        v = found
        while v is not None and v != start:
            path.append(v)
            v = prev[v]
        path = [start] + list(reversed(path[1:]))
        cycles.append((path, comp_edges))
    return cycles


def crate_roots(repo, crate):
    roots = []
    src = os.path.join(repo, crate, "src")
    for name in ("lib.rs", "main.rs"):
        if os.path.exists(os.path.join(src, name)):
            roots.append(os.path.join(src, name))
    for extra in (os.path.join(src, "bin"), os.path.join(repo, crate, "tests"), os.path.join(repo, crate, "benches")):
        if os.path.isdir(extra):
            for f in sorted(os.listdir(extra)):
                p = os.path.join(extra, f)
                if f.endswith(".rs") and f not in TEST_FILES:
                    roots.append(p)
                elif os.path.exists(os.path.join(p, "main.rs")):
                    roots.append(os.path.join(p, "main.rs"))
    return roots


def name(mod):
    return "crate::" + "::".join(mod) if mod else "crate"


def main():
    args = sys.argv[1:]
    show_edges = "--edges" in args
    args = [a for a in args if a != "--edges"]
    repo = os.path.abspath(args[0] if args else os.path.join(os.path.dirname(__file__), ".."))
    failed = 0
    for crate in CRATES:
        for root in crate_roots(repo, crate):
            c = Crate(crate, root)
            edges = c.edges()
            rel = os.path.relpath(root, repo)
            if show_edges:
                for (a, b), (path, line) in sorted(edges.items()):
                    print(f"{rel}: {name(a)} → {name(b)}  {os.path.relpath(path, repo)}:{line}")
            for cycle, comp_edges in find_cycles(edges):
                failed += 1
                print(f"module cycle in {crate} ({rel}): " + " → ".join(name(m) for m in cycle + [cycle[0]]))
                for a, b in zip(cycle, cycle[1:] + [cycle[0]]):
                    path, line = edges[(a, b)]
                    print(f"  {name(a)} → {name(b)}  {os.path.relpath(path, repo)}:{line}")
                others = [e for e in comp_edges if e not in set(zip(cycle, cycle[1:] + [cycle[0]]))]
                if others:
                    print("  other edges among these modules:")
                    for a, b in others:
                        path, line = edges[(a, b)]
                        print(f"    {name(a)} → {name(b)}  {os.path.relpath(path, repo)}:{line}")
    if failed:
        print(f"{failed} module cycle(s) found", file=sys.stderr)
        return 1
    print("no module cycles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
