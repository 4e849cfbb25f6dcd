"""A small real Celery app deployed by the reliable.celery tests and demo.

Two app objects share the same tasks, one per configuration pattern seen in the wild:
- ``reliable_celery_example.celery:app`` reads its settings with ``config_from_object``
  (the Django pattern);
- ``reliable_celery_example.plain:app`` sets them with ``app.conf.update`` at import.
Both deliberately set the unsafe Celery defaults the celery_worker role must override.
"""
