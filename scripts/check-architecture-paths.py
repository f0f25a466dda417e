#!/usr/bin/env python3
"""Fails when ARCHITECTURE.md names a file or folder that does not exist.

Checked: every `backticked` token that looks like a repository path, and in fenced blocks
every word that starts with a top-level folder (`worker/src/runtime/mod.rs`). One with a slash
must exist relative to the repository root or to a crate's source folder (worker/src, jobs/src,
kernels/src, router-client/src, tests, benches); a bare source file name (`pool.rs`) must exist
somewhere in the tree. `a/{b,c}.rs` stands for `a/b.rs` and `a/c.rs`. Store keys and templates
(`jobs/{id}/result.json`, `state.json`), URIs, HTTP routes and what setup scripts create
(.tools/, data/, target/) are not paths of the repository and are skipped.

Usage: python3 scripts/check-architecture-paths.py [DOC.md ...]   (default: ARCHITECTURE.md)
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASES = ["", "worker/src", "jobs/src", "kernels/src", "router-client/src", "tests", "benches"]
EXTS = (".rs", ".md", ".sh", ".py", ".toml", ".yaml", ".yml", ".json", ".txt")
GENERATED = (".tools", "data/", "target/", ".gpu", "$")
SKIP_DIRS = {"target", ".git", "data", ".tools", "node_modules"}


def all_names():
    names = set()
    for d, dirs, files in os.walk(ROOT):
        dirs[:] = [x for x in dirs if x not in SKIP_DIRS]
        names.update(files)
        names.update(dirs)
    return names


TOP = ("worker/", "jobs/", "kernels/", "router-client/", "tests/", "benches/", "scripts/", "docker/", "k8s/", ".ci/")
BARE_EXTS = (".rs", ".md", ".sh", ".py", ".toml")


def expand(tok):
    """`a/{b,c}.rs` -> [`a/b.rs`, `a/c.rs`]; a template brace (`{id}`) is left alone."""
    m = re.search(r"\{([^{}]*,[^{}]*)\}", tok)
    if not m:
        return [tok]
    out = []
    for alt in m.group(1).split(","):
        out.extend(expand(tok[: m.start()] + alt.strip() + tok[m.end():]))
    return out


def looks_like_path(tok):
    if "/" not in tok.rstrip("/") and not tok.endswith(BARE_EXTS + ("/",)):
        return False
    if any(c in tok for c in "{}<>*| ()=,:;\"'") or tok.startswith(("/", "-", "http")):
        return False
    if tok.startswith(GENERATED) or tok.startswith("~"):
        return False
    if tok.endswith("/") and "/" in tok.rstrip("/") or tok.endswith("/") and tok[:-1] in {b.split("/")[0] for b in BASES if b}:
        return True
    return tok.endswith(EXTS) or tok == "Dockerfile" or tok.endswith("/Dockerfile")


def exists(tok):
    tok = tok.lstrip("./") if tok.startswith("./") else tok
    if "/" not in tok.rstrip("/"):
        return tok.rstrip("/") in NAMES
    return any(os.path.exists(os.path.join(ROOT, b, tok)) for b in BASES)


def check(doc, missing):
    text = open(doc, encoding="utf-8").read()
    fenced = False
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            toks = [w.rstrip(".,;:") for w in line.split() if w.startswith(TOP)]
        else:
            toks = re.findall(r"`([^`\n]+)`", line)
        for raw in toks:
            if raw.startswith("../shared/"):
                continue
            for tok in expand(raw):
                if looks_like_path(tok) and not exists(tok):
                    missing.append(f"{os.path.relpath(doc, ROOT)}:{lineno}: `{tok}` does not exist")


def main():
    docs = sys.argv[1:] or [os.path.join(ROOT, "ARCHITECTURE.md")]
    missing = []
    for doc in docs:
        check(doc, missing)
    if missing:
        print("\n".join(missing))
        print(f"check-architecture-paths: {len(missing)} path(s) named in the doc do not exist")
        return 1
    print(f"check-architecture-paths: every path named in {len(docs)} doc(s) exists")
    return 0


NAMES = all_names()
if __name__ == "__main__":
    sys.exit(main())
