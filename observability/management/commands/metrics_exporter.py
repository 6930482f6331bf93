"""``manage.py metrics_exporter``: serve this host's multiprocess metrics where no web process runs.

A machine that runs only qcluster has no ``/metrics``; this serves the samples of every
process in ``PROMETHEUS_MULTIPROC_DIR`` on that host (the database gauges come from the
web's ``/metrics`` alone, so they are not scraped twice), with the same token or network
check as the web view.
"""

from __future__ import annotations

from wsgiref.simple_server import WSGIRequestHandler, make_server

from django.core.management.base import BaseCommand, CommandError
from django.test import RequestFactory
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from observability.metrics import multiprocess_dir
from observability.views import scrape_allowed


class _Quiet(WSGIRequestHandler):
    def log_message(self, format, *args) -> None:
        return None


def exporter_app(directory: str):
    def app(environ, start_response):
        request = RequestFactory().get("/metrics", REMOTE_ADDR=environ.get("REMOTE_ADDR", ""))
        request.META["HTTP_AUTHORIZATION"] = environ.get("HTTP_AUTHORIZATION", "")
        if not scrape_allowed(request):
            start_response("403 Forbidden", [("Content-Type", "text/plain")])
            return [b"Scraping needs the METRICS_TOKEN bearer token or an allowed network.\n"]
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
        return [generate_latest(registry)]

    return app


class Command(BaseCommand):
    help = "Serve the metrics of every process of this host (PROMETHEUS_MULTIPROC_DIR) over HTTP."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--bind", default="127.0.0.1", help="Address to listen on.")
        parser.add_argument("--port", type=int, default=9464)

    def handle(self, *args, bind: str, port: int, **options) -> None:
        directory = multiprocess_dir()
        if not directory:
            raise CommandError("Set PROMETHEUS_MULTIPROC_DIR (the directory every process of this host writes to).")
        with make_server(bind, port, exporter_app(directory), handler_class=_Quiet) as server:
            self.stdout.write(f"Serving the metrics of {directory} on http://{bind}:{port}/metrics")
            server.serve_forever()
