"""``manage.py demo``: migrate, seed the demo tenant, run a django-q2 worker and the admin.

The one command a newcomer needs: SQLite, the ORM broker and the sandbox platform, no
configuration. The worker runs as a child process and stops with the server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Set up the demo (migrate + seed_demo) and serve the admin together with a django-q2 worker."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--addrport", default="127.0.0.1:8000", help="Where the admin listens.")
        parser.add_argument("--no-worker", action="store_true", help="Serve the admin without a worker.")

    def handle(self, *args, addrport: str, no_worker: bool, **options) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write("Database migrated.")
        call_command("seed_demo")
        worker = None if no_worker else self._start_worker()
        # SIGTERM (a supervisor, CI) unwinds like Ctrl-C, so the worker is stopped too.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        try:
            self.stdout.write(self.style.SUCCESS(f"Admin: http://{addrport}/admin/  (Ctrl-C stops server and worker)"))
            call_command("runserver", addrport, use_reloader=False)
        finally:
            if worker is not None:
                self._stop_worker(worker)

    def _start_worker(self) -> subprocess.Popen:
        self.stdout.write("Starting the django-q2 worker (qcluster)…")
        # Its own process group, so stopping it also stops its worker processes.
        return subprocess.Popen([sys.executable, "manage.py", "qcluster"], start_new_session=True)

    def _stop_worker(self, worker: subprocess.Popen) -> None:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(0)
