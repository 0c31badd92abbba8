#!/usr/bin/env python3
"""`buf lint` and `buf breaking` for proto/, as scripts/test runs them (with buf.yaml's rules).

buf does not build proto/ itself: its googleapis imports come from a Python package, not the Buf Schema
Registry. protoc (scripts/gen's, same include paths) compiles Buf images, FileDescriptorSets with
source info (so `// buf:lint:ignore` comments work), and buf checks those, limited to jobwire/.

What "breaking" compares: the working tree's proto/ (so uncommitted edits count) against a baseline
commit, the first of:

1. `$JOBWIRE_BREAKING_AGAINST`, any git revision, when set;
2. the merge-base with `origin/main`, when HEAD is not on origin/main (a branch or local commits not
   yet pushed: everything they change);
3. `HEAD~1`, the commit before the tip. This is the case of CI, which runs in a fresh clone of the
   submitted main (so origin/main is HEAD itself): the submission's last commit is checked against its
   parent. A submission of several commits should set 1, or keep its proto changes in its last commit.

A break that is meant (a field nobody can have used yet...) is declared with a `Breaking-Change: why`
line in the message of a commit between the baseline and HEAD: then the findings are printed but do
not fail. Without a baseline (first commit, shallow clone, not a git checkout) or without proto/ in
it, the breaking check is skipped, saying so.
"""

from __future__ import annotations

import io
import os
import runpy
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BUF = ROOT / "tools" / "proto" / "node_modules" / ".bin" / "buf"
CONFIG = ROOT / "buf.yaml"
#: Only our files: the images also hold google/api and google/protobuf, which are not ours to lint.
SCOPE = "jobwire"
TRAILER = "Breaking-Change:"


def _gen() -> dict[str, Any]:
    """scripts/gen's functions (include paths, protoc), without running it."""
    return runpy.run_path(str(ROOT / "scripts" / "gen"))


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)


def _revision(rev: str) -> str | None:
    result = _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    return result.stdout.strip() if result.returncode == 0 else None


def baseline() -> tuple[str, str] | None:
    """(commit, why this one), or None when there is nothing to compare against."""
    if _git("rev-parse", "--git-dir").returncode != 0:
        return None
    wanted = os.environ.get("JOBWIRE_BREAKING_AGAINST")
    if wanted:
        commit = _revision(wanted)
        if commit is None:
            raise SystemExit(f"buf_check: JOBWIRE_BREAKING_AGAINST={wanted} is not a commit")
        return commit, f"$JOBWIRE_BREAKING_AGAINST ({wanted})"
    head = _revision("HEAD")
    main = _revision("origin/main")
    if head is not None and main is not None and _git("merge-base", "--is-ancestor", head, main).returncode:
        fork = _git("merge-base", head, main).stdout.strip()
        if fork:
            return fork, "the merge-base of HEAD and origin/main"
    parent = _revision("HEAD~1")
    return (parent, "HEAD~1, the commit before the tip") if parent else None


def declared_break(commit: str) -> str | None:
    """The `Breaking-Change:` line of a commit after `commit`, if any."""
    log = _git("log", "--format=%B", f"{commit}..HEAD").stdout
    return next((line for line in log.splitlines() if line.startswith(TRAILER)), None)


def _extract_protos(commit: str, into: Path) -> Path | None:
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit, "proto"], cwd=ROOT, capture_output=True, check=False
    )
    if archive.returncode != 0:
        return None  # no proto/ in that commit
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    root = into / "proto"
    return root if (root / "jobwire" / "v1").is_dir() else None


def _image(gen: dict[str, Any], root: Path, out: Path) -> Path:
    our_protos: Callable[[Path], list[str]] = gen["our_protos"]
    compiled = gen["descriptor_set"](our_protos(root), root=root)
    out.write_bytes(compiled.SerializeToString())
    return out


def _buf(*args: str) -> int:
    command = [str(BUF), *args, "--config", str(CONFIG), "--path", SCOPE]
    return subprocess.run(command, cwd=ROOT, check=False).returncode


def main() -> int:
    if not BUF.is_file():
        print(f"buf_check: {BUF.relative_to(ROOT)} is missing: run scripts/bootstrap", file=sys.stderr)
        return 1
    gen = _gen()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        image = _image(gen, ROOT / "proto", work / "head.binpb")
        if _buf("lint", str(image)) != 0:
            print("buf lint: failed (fix the protos, or mark a deliberate exception; see buf.yaml)")
            return 1
        print("buf lint: ok (STANDARD)")

        found = baseline()
        if found is None:
            print("buf breaking: skipped (no baseline: not a git checkout, a first commit, a shallow clone)")
            return 0
        commit, why = found
        base_root = _extract_protos(commit, work / "base")
        if base_root is None:
            print(f"buf breaking: skipped ({commit[:12]} has no proto/jobwire/v1)")
            return 0
        against = _image(gen, base_root, work / "base.binpb")
        print(f"buf breaking: proto/ against {commit[:12]}, {why}")
        if _buf("breaking", str(image), "--against", str(against)) == 0:
            print("buf breaking: ok (PACKAGE)")
            return 0
        declared = declared_break(commit)
        if declared is not None:
            print(f"buf breaking: the changes above are breaking, and declared so: {declared}")
            return 0
        print(
            "buf breaking: failed. Keep the wire contract (reserve removed numbers and names, add instead "
            f"of changing), or declare a deliberate break with a '{TRAILER} why' line in the commit message."
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
