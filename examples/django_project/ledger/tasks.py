"""Tasks that read and write the database through Django's ORM."""

import socket
import time

from celery import shared_task
from django.conf import settings
from django.db import transaction
from django.db.models import Sum

from .models import Entry


@shared_task(bind=True, name="ledger.record")
def record(self, key: str, amount: int, seconds: float = 0.0) -> dict:
    """Write one entry for KEY, SECONDS after the task started (the row is committed when it ends)."""
    time.sleep(seconds)
    with transaction.atomic():
        entry = Entry.objects.create(
            key=key, amount=amount, task_id=self.request.id, hostname=socket.gethostname(), release=settings.RELEASE
        )
    return {"id": entry.pk, "key": key, "release": settings.RELEASE}


@shared_task(name="ledger.total")
def total(key: str) -> dict:
    """What the database holds for KEY: how many entries and their sum."""
    entries = Entry.objects.filter(key=key)
    return {"count": entries.count(), "sum": entries.aggregate(total=Sum("amount"))["total"] or 0}
