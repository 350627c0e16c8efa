"""``manage.py update_compliance_records``: the records job's service, in this process under the job's lock."""

import getpass

from django.core.management.base import BaseCommand, CommandError

from governance import jobs
from governance.models import Job, JobStatus, JobTrigger
from rollout.context import Actor, acting_as, new_request_id


class Command(BaseCommand):
    help = "Record telemetry fields and voice transcription flows seen since the last run; propose the new ones."

    def handle(self, *args, **options):
        actor = Actor(kind="system", name=f"manage.py update_compliance_records ({getpass.getuser()})"[:150])
        with acting_as(actor, request_id=new_request_id()):
            run = jobs.run_job(Job.UPDATE_COMPLIANCE_RECORDS, trigger=JobTrigger.COMMAND, requested_by_name=actor.name)
        if run.status != JobStatus.SUCCEEDED:
            raise CommandError(f"Records update {run.status}: {run.summary}")
        self.stdout.write(run.summary)
