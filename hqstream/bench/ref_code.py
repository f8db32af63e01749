"""Another git ref's code, for benchmarks that compare it with this checkout.

:func:`ref_checkout` checks the ref out in a temporary git worktree under
``.bench/`` (ignored) and removes it afterwards. Its components run with this
checkout's interpreter and installed packages: only ``PYTHONPATH`` points at
the worktree (see :func:`hqstream.bench.pipeline_rig.pipeline`), so no second
virtualenv is built. When the ref declares other dependencies than this
checkout, that is said before anything runs (its figures are then those of
its code on this checkout's packages). A ref whose compiled extension
(``native/``) is of another version than the one installed gets its own,
built into its worktree, which is first on its ``PYTHONPATH``
(:func:`build_ref_native`): else its workers and gateway would find a version
they do not take and run the Python path, and the comparison would be of two
parses, not of the two refs. Never changes the current checkout.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
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


def native_version(crate: Path) -> str | None:
    """The version of the compiled extension whose crate is at ``crate`` (its
    ``Cargo.toml``), None when there is none."""
    try:
        manifest = tomllib.loads((crate / "Cargo.toml").read_text())
    except FileNotFoundError:
        return None
    version = manifest.get("package", {}).get("version")
    return version if isinstance(version, str) else None


def installed_native_version() -> str | None:
    """The version of the ``hqstream_native`` this interpreter imports, if any."""
    try:
        import hqstream_native
    except ImportError:
        return None
    version = getattr(hqstream_native, "__version__", None)
    return version if isinstance(version, str) else None


def build_ref_native(ref: RefCode, announce: Callable[[str], None]) -> str | None:
    """Build ``ref``'s own ``hqstream_native`` into its worktree when the installed one is
    of another version (``announce`` says so first: a minute or two); what to say
    about it once done (None: nothing to build)."""
    theirs = native_version(ref.path / "native")
    ours = installed_native_version()
    if theirs is None or theirs == ours:
        return None
    announce(f"building {ref.label}'s own hqstream_native {theirs} (this checkout: {ours}) ...")
    # the checkout's own build folder: its dependencies are built there already
    env = {**os.environ, "CARGO_TARGET_DIR": str(REPO / "native" / "target")}
    cargo_bin = Path.home() / ".cargo" / "bin"
    if cargo_bin.is_dir():
        env["PATH"] = f"{cargo_bin}{os.pathsep}{env.get('PATH', '')}"
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
               str(ref.path), str(ref.path / "native")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        tail = " ".join(done.stderr.strip().splitlines()[-3:])
        return (
            f"{ref.label} expects hqstream_native {theirs}, {ours} is installed, and its "
            f"own did not build ({tail}): its workers and gateway run the Python path"
        )
    return f"{ref.label} runs its own hqstream_native {theirs} (this checkout: {ours})"


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
