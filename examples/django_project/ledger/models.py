"""One row per run of a task that writes: a task that runs twice writes two rows for its key."""

from django.db import models


class Entry(models.Model):
    key = models.CharField(max_length=64, db_index=True)
    amount = models.IntegerField()
    task_id = models.CharField(max_length=64)
    hostname = models.CharField(max_length=255)
    release = models.CharField(max_length=64)
    written_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.key}: {self.amount}"
