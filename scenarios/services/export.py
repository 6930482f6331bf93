"""The preflight export file ``STATE_DIR/ad_push_diffs.json`` (DESIGN.md section 6).

A JSON list of preflight documents, newest first, at most ``AD_PUSH_DIFFS_KEEP`` long.
Other tools read it while we write, so it is replaced atomically and never seen half
written; concurrent writers (the command, workers) take turns through a lock file.
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


def export_path() -> Path:
    return Path(settings.STATE_DIR) / EXPORT_FILE_NAME


def export_run(*, run: PreflightRun, path: Path | None = None) -> Path:
    """Append a finished run's document to the export file; returns the file's path.

    Guarantees: see ``export_append``. A run without a document (queued, running or
    failed) is refused with ``ValueError``.
    """
    from scenarios.services.preflight import preflight_document

    if not run.payload:
        raise ValueError(f"Preflight {run.run_id} has no document to export (status {run.status}).")
    return export_append(document=preflight_document(run), path=path)


def export_append(*, document: dict[str, Any], path: Path | None = None, keep: int | None = None) -> Path:
    """Put ``document`` first in the export list, keeping at most ``keep`` documents.

    Guarantees: the file is always a complete JSON list — it is written to a temporary
    file in the same directory, flushed and fsynced, then swapped in with ``os.replace``,
    so a crash at any moment leaves either the old or the new list. Writers are
    serialised by ``fcntl.flock`` on ``<file>.lock``. A document with the same ``run_id``
    replaces the earlier copy (a task that runs twice exports once). An existing file
    that is not a JSON list is moved aside to ``<file>.corrupt-<UTC timestamp>`` with a
    warning and a new list is started.
    """
    target = Path(path) if path is not None else export_path()
    limit = keep if keep is not None else settings.AD_PUSH_DIFFS_KEEP
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target):
        documents = _read_list(target)
        run_id = document.get("run_id")
        documents = [document, *(d for d in documents if run_id is None or d.get("run_id") != run_id)]
        _write_atomically(target, documents[:limit])
    return target


@contextmanager
def _locked(target: Path) -> Iterator[None]:
    with open(target.with_name(target.name + ".lock"), "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _read_list(target: Path) -> list[dict[str, Any]]:
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    try:
        documents = json.loads(text)
    except ValueError:
        documents = None
    if isinstance(documents, list) and all(isinstance(d, dict) for d in documents):
        return documents
    aside = target.with_name(f"{target.name}.corrupt-{timezone.now().strftime('%Y%m%dT%H%M%S%fZ')}")
    os.replace(target, aside)
    logger.warning(
        "The preflight export file %s was not a JSON list of documents; moved it to %s and started a new list.",
        target,
        aside,
        extra={"export_file": str(target), "moved_to": str(aside)},
    )
    return []


def _write_atomically(target: Path, documents: list[dict[str, Any]]) -> None:
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o644)  # mkstemp makes it private; readers are other tools
            json.dump(documents, handle, indent=2, sort_keys=True)
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
