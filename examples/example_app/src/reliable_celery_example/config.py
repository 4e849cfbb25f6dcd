"""Settings read by the Django-pattern app (``config_from_object(..., namespace="CELERY")``).

They are the unsafe ones on purpose: the celery_worker role's settings must win over them.
"""

CELERY_TASK_ACKS_LATE = False
CELERY_TASK_REJECT_ON_WORKER_LOST = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 4
CELERY_TASK_TRACK_STARTED = True
