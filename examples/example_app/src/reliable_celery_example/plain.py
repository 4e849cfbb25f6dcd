"""The plain app: settings set with ``app.conf.update`` when the module is imported."""

from celery import Celery

app = Celery("reliable_celery_example", include=["reliable_celery_example.tasks"])
app.conf.update(task_acks_late=False, worker_prefetch_multiplier=4, task_track_started=True)
