"""gunicorn settings for multiprocess metrics: ``gunicorn -c python:observability.gunicorn budgetradar.wsgi``.

prometheus-client keeps one file per process in ``PROMETHEUS_MULTIPROC_DIR``; when a
worker exits, its live-gauge files must be marked dead so they stop counting (its
counters stay, so totals never go backwards).
"""

from prometheus_client import multiprocess


def child_exit(server, worker) -> None:
    multiprocess.mark_process_dead(worker.pid)
