"""Log lines: JSON, once each."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
import logging, django
django.setup()
logging.getLogger("django.request").warning("Not Found: /nowhere")
logging.getLogger("actions.engine").warning("an engine line")
"""


def test_every_log_line_is_printed_once_as_json():
    # A fresh process with the project's settings and DEBUG on, as `manage.py demo` runs:
    # Django's own console handler for "django" used to print each django.* line a second time.
    env = {"DJANGO_SETTINGS_MODULE": "budgetradar.settings", "DEBUG": "true", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert [json.loads(line)["message"] for line in lines] == ["Not Found: /nowhere", "an engine line"]
