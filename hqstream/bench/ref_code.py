"""Another git ref's code, for benchmarks that compare it with this checkout.

:func:`ref_checkout` checks the ref out in a temporary git worktree under
``.bench/`` (ignored) and removes it afterwards. Its components run with this
checkout's interpreter and installed packages: only ``PYTHONPATH`` points at
the worktree (see :func:`hqstream.bench.pipeline_rig.pipeline`), so no second
virtualenv is built. When the ref declares other dependencies than this
checkout, that is said before anything runs (its figures are then those of
its code on this checkout's packages). Never changes the current checkout.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
WORKTREES = REPO / ".bench"


@dataclass(frozen=True, slots=True)
class RefCode:
    """A ref resolved to a commit and checked out at ``path``."""

    ref: str
    commit: str
    path: Path

    @property
    def label(self) -> str:
        return f"{self.ref} ({self.commit[:7]})"


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def head_label() -> str:
    """This checkout: its branch and commit, ``+changes`` when the tree is dirty."""
    branch = _git("rev-parse", "--abbrev-ref", "HEAD")
    commit = _git("rev-parse", "--short=7", "HEAD")
    dirty = "+changes" if _git("status", "--porcelain", "--untracked-files=no") else ""
    return f"{branch} ({commit}{dirty})"


def _dependencies(pyproject: str) -> list[str]:
    project = tomllib.loads(pyproject).get("project", {})
    return sorted(project.get("dependencies", []))


def dependency_drift(commit: str) -> list[str]:
    """Dependencies declared by only one of ``commit`` and this checkout."""
    theirs = set(_dependencies(_git("show", f"{commit}:pyproject.toml")))
    ours = set(_dependencies((REPO / "pyproject.toml").read_text()))
    return sorted(theirs ^ ours)


def drift_warning(ref: RefCode) -> str | None:
    """What to say before running ``ref`` when it declares other dependencies than
    this checkout (None when it does not)."""
    drift = dependency_drift(ref.commit)
    if not drift:
        return None
    return (
        f"{ref.label} declares other dependencies ({', '.join(drift)}); "
        "it runs on this checkout's packages"
    )


@contextlib.contextmanager
def ref_checkout(ref: str) -> Iterator[RefCode]:
    """``ref`` checked out (detached) in ``.bench/ref-<commit>``, removed on exit."""
    commit = _git("rev-parse", "--verify", f"{ref}^{{commit}}")
    path = WORKTREES / f"ref-{commit[:12]}"
    if path.exists():  # left over by an interrupted run
        _git("worktree", "remove", "--force", str(path))
    WORKTREES.mkdir(exist_ok=True)
    _git("worktree", "add", "--detach", str(path), commit)
    try:
        yield RefCode(ref, commit, path)
    finally:
        try:
            _git("worktree", "remove", "--force", str(path))
        except RuntimeError as exc:
            logger.warning("worktree %s not removed: %s", path, exc)
