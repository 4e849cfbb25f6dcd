"""Settings of the example project. What is not secret comes from the environment (the roles'
``*_environment`` options, the web role's own unit); the secrets come from systemd credentials
(``celery_worker_app_credentials``), files in ``$CREDENTIALS_DIRECTORY``, never from the
environment, which every process a task starts inherits."""

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured


def credential(name: str) -> str:
    """A secret that systemd loaded for this service (``LoadCredential=NAME:PATH``)."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory or not (Path(directory) / name).is_file():
        raise ImproperlyConfigured(
            f"the credential {name} is missing: run under systemd with LoadCredential={name}:PATH "
            "(the roles' *_app_credentials, or systemd-run -p LoadCredential=... for manage.py)"
        )
    return (Path(directory) / name).read_text().strip()


# The version this code is: the name of the directory it was deployed to (/srv/proj/releases/VERSION).
RELEASE = Path(__file__).resolve().parents[1].name

SECRET_KEY = credential("django_secret_key")
DEBUG = False
ALLOWED_HOSTS = os.environ.get("PROJ_ALLOWED_HOSTS", "localhost").split(",")
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ROOT_URLCONF = "proj.urls"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django_celery_beat",
    "ledger",
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": os.environ.get("PROJ_DB_HOST", "127.0.0.1"),
        "PORT": os.environ.get("PROJ_DB_PORT", "5432"),
        "NAME": os.environ.get("PROJ_DB_NAME", "proj"),
        "USER": os.environ.get("PROJ_DB_USER", "proj"),
        "PASSWORD": credential("db_password"),
        # A worker holds its connection between tasks; Django checks it before reusing it.
        "CONN_MAX_AGE": 60,
        "CONN_HEALTH_CHECKS": True,
    }
}

# Celery's own settings (namespace CELERY); the celery_worker role applies its reliable-delivery
# profile after these and wins, and gives the broker URL as a credential.
CELERY_TASK_TRACK_STARTED = True
