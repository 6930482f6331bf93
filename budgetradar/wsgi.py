"""WSGI entry point (gunicorn budgetradar.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "budgetradar.settings")
application = get_wsgi_application()
