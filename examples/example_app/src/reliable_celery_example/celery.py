"""The Django-pattern app: settings come from a module through ``config_from_object``."""

from celery import Celery

app = Celery("reliable_celery_example", include=["reliable_celery_example.tasks"])
app.config_from_object("reliable_celery_example.config", namespace="CELERY")
