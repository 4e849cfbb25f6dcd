"""Tasks that read and write the database through Django's ORM."""

import socket
import time

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import Sum

from .models import Entry


# A task that raises is acknowledged like one that succeeded (late acks included): without the
# retry, every task running while the database restarts would end FAILURE and never write its row.
# A retry sends the task again and then acknowledges this message; Celery's Django fixup closes
# the broken connection before the next run.
@shared_task(
    bind=True,
    name="ledger.record",
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=1,
    retry_backoff_max=10,
    retry_jitter=False,
    max_retries=30,
)
def record(self, key: str, amount: int, seconds: float = 0.0) -> dict:
    """Read KEY's entries, work SECONDS, write one entry: one transaction, committed when the task ends."""
    with transaction.atomic():
        Entry.objects.filter(key=key).count()
        time.sleep(seconds)
        entry = Entry.objects.create(
            key=key, amount=amount, task_id=self.request.id, hostname=socket.gethostname(), release=settings.RELEASE
        )
    return {"id": entry.pk, "key": key, "release": settings.RELEASE}


@shared_task(name="ledger.total")
def total(key: str) -> dict:
    """What the database holds for KEY: how many entries and their sum."""
    entries = Entry.objects.filter(key=key)
    return {"count": entries.count(), "sum": entries.aggregate(total=Sum("amount"))["total"] or 0}
