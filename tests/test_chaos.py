"""A small seeded run of the chaos suite (bench/chaos.py): real workers killed and paused.

Two rounds with real ``qcluster`` processes on Redis against the sandbox with faults;
the suite's own checker must find no violation. The full run (50 rounds) is in the
closing note and bench/README.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("CHAOS_REDIS_URL", "redis://127.0.0.1:6379/9")


def redis_reachable() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def test_two_seeded_chaos_rounds_end_with_no_violation():
    if not redis_reachable():
        pytest.skip(f"needs Redis at {REDIS_URL} (the chaos suite runs django-q2 on a Redis broker)")
    settings = connection.settings_dict
    server = f"postgres://{settings['USER']}@{settings['HOST'] or '127.0.0.1'}:{settings['PORT'] or 5432}/postgres"
    result = subprocess.run(
        [
            sys.executable,
            "bench/chaos.py",
            "--rounds",
            "2",
            "--seed",
            "7",
            "--actions",
            "6",
            "--chaos-seconds",
            "5",
            "--database-url",
            server,
            "--redis-url",
            REDIS_URL,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")},
    )
    assert result.returncode == 0 and "violations             0" in result.stdout, (
        result.stdout[-4000:] + result.stderr[-2000:]
    )
