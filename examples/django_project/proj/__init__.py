"""The example Django project; its Celery app loads with Django (``proj.celery``)."""

from .celery import app as celery_app

__all__ = ("celery_app",)
