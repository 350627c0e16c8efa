import os
from pathlib import Path

from celery import Celery
from celery.beat import PersistentScheduler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("rollout_dashboard")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


class Scheduler(PersistentScheduler):
    """Celery's file-backed beat scheduler that creates the schedule file's folder first.

    A fresh deployment has no ``var/`` (only the Makefile creates it); the stock
    scheduler then dies on ``FileNotFoundError`` and no job ever runs. Used by
    ``celery beat`` and ``celery worker -B`` alike (``CELERY_BEAT_SCHEDULER``).
    """

    def setup_schedule(self) -> None:
        Path(self.schedule_filename).parent.mkdir(parents=True, exist_ok=True)
        super().setup_schedule()
