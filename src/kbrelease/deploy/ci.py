"""The steps of the rendered CI workflows, as functions (and ``kbrelease ci ...`` commands).

Seed 003's automation, with each shell step one small command:

* spec repository, on a push to ``bundles/**``: :func:`changed_bundles` lists
  the bundle specs the push added or changed (``git diff`` of the push range),
  each with the dispatch payload ``{bundle_file, bundle_type, bundle_name,
  bundle_version, spec_repo_commit}``;
* index repository, on that ``repository_dispatch``: :func:`check_payload`
  validates the payload (it is untrusted input), :func:`restore_index` brings
  back the previous data index from ``data/<bundle_name>`` (unchanged files are
  not hashed again), ``kbrelease sync --index-only`` and ``kbrelease index
  --bundle`` resolve the bundle, and :func:`commit_index` commits the result
  to the branch ``data/<bundle_name>`` and pushes it (one branch per bundle).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kbrelease.config import Config
from kbrelease.errors import DataIndexError, KbReleaseError
from kbrelease.trust.names import check_name
from kbrelease.trust.paths import contained, safe_relpath
from kbrelease.trust.redact import redact
from kbrelease.workspace import Workspace

DEFAULT_GLOB = "bundles/**/*.yaml"
BOT = ("kbrelease-bot", "kbrelease-bot@users.noreply.github.com")
_NO_COMMIT = "0" * 40


def git(repo: Path, *args: str, check: bool = True, env: dict[str, str] | None = None) -> str:
    """Run git in ``repo``; a failure is a :class:`DataIndexError` with git's (redacted) message."""
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=300, check=False, env=env)
    except (OSError, subprocess.SubprocessError) as exc:
        raise DataIndexError(f"git {args[0]} could not run in {repo}: {exc}; install git") from None
    if check and done.returncode != 0:
        raise DataIndexError(f"git {' '.join(args[:2])} failed in {repo}: {redact(done.stderr.strip())[:500]}")
    return done.stdout.strip() if done.returncode == 0 else ""


def branch_of(bundle_name: str) -> str:
    """The branch that holds a bundle's data index: ``data/<bundle_name>``."""
    return f"data/{check_name('bundle', bundle_name)}"


# --- the spec repository ---------------------------------------------------------


@dataclass
class ChangedBundles:
    """Bundle specs a push added or changed: the dispatch payloads, and the specs that could not be read."""

    bundles: list[dict[str, str]] = field(default_factory=list)
    invalid: list[dict[str, str]] = field(default_factory=list)

    def asdict(self) -> dict[str, Any]:
        return asdict(self)


def changed_bundles(repo: Path, before: str | None, after: str, glob: str = DEFAULT_GLOB) -> ChangedBundles:
    """The bundle specs matching ``glob`` added, modified or renamed between ``before`` and ``after``.

    Without ``before`` (a new branch: GitHub sends 40 zeros), the files the
    ``after`` commit itself changed. Each spec is read at ``after``; one that
    is not a valid spec is listed in ``invalid`` with the reason, the others
    are dispatched anyway.
    """
    from kbrelease.index.bundles import load_spec

    spec = f":(glob){glob}"
    if before and before != _NO_COMMIT and _succeeds(repo, "cat-file", "-e", f"{before}^{{commit}}"):
        names = git(repo, "diff", "--name-only", "--diff-filter=AMR", "--no-renames", before, after, "--", spec)
    else:
        names = git(repo, "diff-tree", "--root", "--no-commit-id", "--name-only", "-r", "--diff-filter=AMR", after, "--", spec)
    commit = git(repo, "rev-parse", f"{after}^{{commit}}")
    out = ChangedBundles()
    for name in sorted(n for n in names.splitlines() if n):
        text = git(repo, "show", f"{commit}:{name}")
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / Path(name).name
            copy.write_text(text + "\n", encoding="utf-8")
            try:
                bundle = load_spec(copy)
            except KbReleaseError as exc:
                out.invalid.append({"bundle_file": name, "error": str(exc).replace(str(copy), name)})
                continue
        parts = name.split("/")
        out.bundles.append(
            {
                "bundle_file": name,
                "bundle_type": bundle.type or (parts[1] if len(parts) > 2 else ""),
                "bundle_name": bundle.name,
                "bundle_version": bundle.version,
                "spec_repo_commit": commit,
            }
        )
    return out


def github_output(path: Path, result: ChangedBundles) -> None:
    """Append the step outputs (``bundles`` as JSON, ``count``, ``invalid``) to ``$GITHUB_OUTPUT``."""
    with path.open("a", encoding="utf-8") as fh:
        fh.write(f"bundles={json.dumps(result.bundles, separators=(',', ':'))}\n")
        fh.write(f"count={len(result.bundles)}\n")
        fh.write(f"invalid={len(result.invalid)}\n")


# --- the index repository --------------------------------------------------------


def check_payload(spec_root: Path, bundle_file: str, bundle_name: str, glob_root: str = "bundles") -> Path:
    """The spec file a dispatch payload names, after checking it: a plain relative path under
    ``bundles/``, a ``.yaml`` file inside ``spec_root``, whose spec is named ``bundle_name``."""
    from kbrelease.index.bundles import load_spec

    rel = safe_relpath(bundle_file, "bundle_file")
    if not rel.startswith(f"{glob_root}/") or not rel.endswith((".yaml", ".yml")):
        raise DataIndexError(f"bundle_file {rel!r} is not a {glob_root}/**/*.yaml file; the dispatch payload is wrong")
    check_name("bundle", bundle_name, "the dispatch payload's bundle_name")
    path = contained(spec_root, rel, "bundle_file")
    if not path.is_file():
        raise DataIndexError(f"bundle_file {rel!r} is not in the spec checkout {spec_root}; check spec_repo_commit of the dispatch")
    spec = load_spec(path)
    if spec.name != bundle_name:
        raise DataIndexError(f"{rel} names bundle {spec.name!r}, the dispatch payload says {bundle_name!r}; dispatch it again from the spec repository")
    return path


def _succeeds(repo: Path, *args: str) -> bool:
    """Whether ``git args`` exits 0 (a question to git, not an operation)."""
    try:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, timeout=120, check=False).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _remote_has(repo: Path, remote: str, branch: str) -> bool:
    return _succeeds(repo, "ls-remote", "--exit-code", "--heads", remote, branch)


def restore_index(cfg: Config, repo: Path, bundle_name: str, remote: str = "origin") -> bool:
    """Copy ``index/`` of the branch ``data/<bundle_name>`` into the workspace (the previous sync, so
    unchanged files are not hashed again). False when the branch does not exist yet."""
    branch = branch_of(bundle_name)
    if not _remote_has(repo, remote, branch):
        return False
    git(repo, "fetch", "--depth", "1", remote, branch)
    listed = git(repo, "ls-tree", "-r", "--name-only", "FETCH_HEAD", "--", "index")
    target = Workspace.of(cfg).index_dir
    target.mkdir(parents=True, exist_ok=True)
    for name in listed.splitlines():
        rel = safe_relpath(name, "index file of the data branch")
        blob = subprocess.run(["git", "-C", str(repo), "show", f"FETCH_HEAD:{rel}"], capture_output=True, timeout=300, check=True).stdout
        dest = contained(target.parent, rel, "index file")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(blob)
    return True


@dataclass
class IndexCommit:
    """What :func:`commit_index` did."""

    branch: str
    bundle_name: str
    bundle_version: str
    commit: str | None
    changed: bool
    pushed: bool
    files: int

    def asdict(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self) -> str:
        """The job summary (``$GITHUB_STEP_SUMMARY``)."""
        what = f"committed `{(self.commit or '')[:12]}`" if self.changed else "unchanged (no commit)"
        return f"### Data index of bundle `{self.bundle_name}` {self.bundle_version}\n\nBranch `{self.branch}`: {what}, {self.files} file(s).\n"


def _copy_tree(src: Path, dest: Path) -> int:
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".*"))
    return sum(1 for p in dest.rglob("*") if p.is_file())


def _same_checksum(ours: Path, theirs: Path) -> bool:
    """Both folders hold a data index with the same content checksum (``meta.checksum``)."""
    from kbrelease.index.data_index import load_bundle_yaml

    try:
        a, b = (load_bundle_yaml((folder / "bundle.yaml").read_bytes())["meta"].get("checksum") for folder in (ours, theirs))
    except (OSError, KeyError, TypeError, ValueError):
        return False
    return bool(a) and a == b


def commit_index(
    cfg: Config,
    repo: Path,
    bundle_name: str,
    spec_commit: str | None = None,
    remote: str = "origin",
    push: bool = True,
) -> IndexCommit:
    """Commit the resolved bundle (``bundles/<name>/<version>/``, ``LATEST``) and the current data index
    (``index/``) to the branch ``data/<bundle_name>``, on top of its last commit; push it.

    Nothing is committed when nothing changed. Other versions already on the
    branch are kept.
    """
    from kbrelease.index.bundles import LATEST, bundle_versions

    ws = Workspace.of(cfg)
    branch = branch_of(bundle_name)
    versions = bundle_versions(ws, bundle_name)
    if not versions:
        raise DataIndexError(f"bundle {bundle_name!r} has not been resolved in {ws.root}; run `kbrelease index --bundle <spec>` first")
    latest_file = ws.bundle_dir(bundle_name) / LATEST
    version = latest_file.read_text(encoding="utf-8").strip() if latest_file.is_file() else versions[-1]
    exists = _remote_has(repo, remote, branch)
    dest = Path(tempfile.mkdtemp(prefix="kbrelease-data-"))
    shutil.rmtree(dest)
    try:
        if exists:
            git(repo, "fetch", "--depth", "1", remote, branch)
            git(repo, "worktree", "add", "-B", branch, str(dest), "FETCH_HEAD")
        else:
            git(repo, "worktree", "add", "--detach", str(dest))
            git(dest, "checkout", "-q", "--orphan", branch)
            git(dest, "rm", "-rq", "--cached", "--ignore-unmatch", ".")
            for child in dest.iterdir():
                if child.name != ".git":
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        bundle_src = ws.bundle_dir(bundle_name) / version
        if exists and _same_checksum(ws.index_dir, dest / "index") and _same_checksum(bundle_src, dest / "bundles" / bundle_name / version):
            # Only created_at would differ: the branch already holds this content.
            return IndexCommit(branch, bundle_name, version, git(dest, "rev-parse", "HEAD"), False, False, 0)
        files = _copy_tree(ws.index_dir, dest / "index")
        files += _copy_tree(bundle_src, dest / "bundles" / bundle_name / version)
        (dest / "bundles" / bundle_name / LATEST).write_text(version + "\n", encoding="utf-8")
        git(dest, "add", "-A", "index", "bundles")
        changed = not _succeeds(dest, "diff", "--cached", "--quiet")
        commit = None
        if changed:
            source = f" from spec {spec_commit}" if spec_commit else ""
            env = {**os.environ, "GIT_AUTHOR_NAME": BOT[0], "GIT_AUTHOR_EMAIL": BOT[1], "GIT_COMMITTER_NAME": BOT[0], "GIT_COMMITTER_EMAIL": BOT[1]}
            git(dest, "commit", "-q", "-m", f"data index of bundle {bundle_name} {version}{source}", env=env)
            commit = git(dest, "rev-parse", "HEAD")
            if push:
                git(dest, "push", "-q", remote, f"HEAD:refs/heads/{branch}")
        return IndexCommit(branch, bundle_name, version, commit, changed, bool(changed and push), files)
    finally:
        subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(dest)], capture_output=True, check=False)
        shutil.rmtree(dest, ignore_errors=True)
