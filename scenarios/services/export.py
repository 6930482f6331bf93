"""The preflight export (DESIGN.md section 6): one file per run plus a small index.

- ``STATE_DIR/ad_push_diffs/<run_id>.json`` holds one run's whole document (compact
  JSON, keys sorted). It is
  written once when the run is exported and never touched by another run's export, so
  the cost of an export is that run's size, whatever came before (exporting the same run
  again replaces its own file).
- ``STATE_DIR/ad_push_diffs.json`` is the index: a JSON list, newest first, at most
  ``AD_PUSH_DIFFS_KEEP`` long, of each run's head — ``run_id``, ``tenant``,
  ``generation_mode``, ``generated_at``, ``source_plan_id``, ``notes``, ``summary``,
  ``has_critical``, ``breach_counts`` (critical/warning) — and ``document``, the run
  file's path relative to ``STATE_DIR``. It never holds entities or breaches, so it stays
  small; a run falling off the index has its file removed.

Other tools read both while we write: every file is replaced atomically (temporary file,
fsync, ``os.replace``) and never seen half written, the run's file before the index
that points at it; concurrent writers (the command, workers) take turns through a lock
file.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.conf import settings
from django.utils import timezone

from scenarios.models import PreflightRun

logger = logging.getLogger(__name__)

EXPORT_FILE_NAME = "ad_push_diffs.json"
RUNS_DIR_NAME = "ad_push_diffs"
HEAD_FIELDS = ("run_id", "tenant", "generation_mode", "generated_at", "source_plan_id", "notes", "summary")


def export_path() -> Path:
    return Path(settings.STATE_DIR) / EXPORT_FILE_NAME


def export_run(*, run: PreflightRun, path: Path | None = None) -> Path:
    """Export a finished run's document; returns the index's path.

    Guarantees: see ``export_append``. A run without a document (queued, running or
    failed) is refused with ``ValueError``.
    """
    from scenarios.services.preflight import preflight_document

    if not run.payload:
        raise ValueError(f"Preflight {run.run_id} has no document to export (status {run.status}).")
    return export_append(document=preflight_document(run), path=path)


def export_append(*, document: dict[str, Any], path: Path | None = None, keep: int | None = None) -> Path:
    """Write ``document`` to its own file and put its head first in the index, keeping
    at most ``keep`` runs.

    Guarantees: the run's file is complete before the index names it, and the index is
    always a complete JSON list (written to a temporary file in the same directory,
    flushed and fsynced, then swapped in with ``os.replace``), so a crash at any moment
    leaves the previous index, whose files all exist. Other runs' files are never
    rewritten; files of runs that fall off the index are removed after the new index is
    in place. Writers are serialised by ``fcntl.flock`` on ``<index>.lock``. A document
    with the same ``run_id`` replaces the earlier copy (a task that runs twice exports
    once). An index that is not a JSON list of run heads is moved aside to
    ``<index>.corrupt-<UTC timestamp>`` with a warning and a new index is started.
    """
    target = Path(path) if path is not None else export_path()
    limit = keep if keep is not None else settings.AD_PUSH_DIFFS_KEEP
    runs_dir = target.parent / RUNS_DIR_NAME
    runs_dir.mkdir(parents=True, exist_ok=True)
    run_id = str(document.get("run_id") or f"unnamed-{timezone.now().strftime('%Y%m%dT%H%M%S%fZ')}")
    run_file = runs_dir / f"{_safe_name(run_id)}.json"
    with _locked(target):
        _write_atomically(run_file, document, compact=True)
        heads = _read_index(target)
        head = _head(document, run_file.relative_to(target.parent))
        heads = [head, *(h for h in heads if h.get("run_id") != run_id)]
        _write_atomically(target, heads[:limit])
        for dropped in heads[limit:]:
            _remove_run_file(target.parent, dropped)
    return target


def _safe_name(run_id: str) -> str:
    """Run ids are ``pf-`` and hex; anything else is kept to a file-name-safe form."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in run_id)[:120]


def _head(document: dict[str, Any], relative: Path) -> dict[str, Any]:
    breaches = document.get("breaches") or []
    head = {name: document[name] for name in HEAD_FIELDS if name in document}
    head["has_critical"] = bool(document.get("has_critical"))
    head["breach_counts"] = {
        severity: sum(1 for b in breaches if b.get("severity") == severity) for severity in ("critical", "warning")
    }
    head["document"] = relative.as_posix()
    return head


def _remove_run_file(base: Path, head: dict[str, Any]) -> None:
    relative = head.get("document")
    if isinstance(relative, str) and relative.startswith(f"{RUNS_DIR_NAME}/"):
        (base / relative).unlink(missing_ok=True)


@contextmanager
def _locked(target: Path) -> Iterator[None]:
    with open(target.with_name(target.name + ".lock"), "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _read_index(target: Path) -> list[dict[str, Any]]:
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    try:
        heads = json.loads(text)
    except ValueError:
        heads = None
    if isinstance(heads, list) and all(isinstance(h, dict) for h in heads):
        return [h if "document" in h else _from_whole_document(target, h) for h in heads]
    aside = target.with_name(f"{target.name}.corrupt-{timezone.now().strftime('%Y%m%dT%H%M%S%fZ')}")
    os.replace(target, aside)
    logger.warning(
        "The preflight export index %s was not a JSON list of runs; moved it to %s and started a new index.",
        target,
        aside,
        extra={"export_file": str(target), "moved_to": str(aside)},
    )
    return []


def _from_whole_document(target: Path, document: dict[str, Any]) -> dict[str, Any]:
    """An entry of the earlier format (the whole document in the list): give it its own
    file and keep its head, so the index shrinks on the first export after an upgrade."""
    run_file = target.parent / RUNS_DIR_NAME / f"{_safe_name(str(document.get('run_id') or 'unnamed'))}.json"
    _write_atomically(run_file, document, compact=True)
    return _head(document, run_file.relative_to(target.parent))


def _write_atomically(target: Path, content: Any, *, compact: bool = False) -> None:
    """``compact``: no indentation (run files are large and read by programs; the index
    stays indented for people)."""
    layout = {"separators": (",", ":")} if compact else {"indent": 2}
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o644)  # mkstemp makes it private; readers are other tools
            json.dump(content, handle, sort_keys=True, **layout)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (a power cut after replace keeps the new file)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
