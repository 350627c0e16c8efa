"""``manage.py seed_demo``: demo users (one per role), tenants, rollouts and their records. Idempotent.

It lives in the top app so it can lay down every app's demo data in order: the
main rollout enters canary through sign-offs and an applied transition request.
"""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from evaluations.demo import seed_evaluations
from governance.demo import enter_canary, seed_compliance, seed_governance
from rollout.demo import seed_demo
from rollout.models import PhaseKind
from rollout.roles import Role


class Command(BaseCommand):
    help = "Load demo users, tenants and rollouts (idempotent: a second run changes nothing)."

    def add_arguments(self, parser):
        parser.add_argument("--password", default="demo", help="Password of the demo users (default: demo).")

    def handle(self, *args, password: str, **options):
        created: list[str] = []

        def enter_canary_after_preparation_runs(rollout, users, at) -> None:
            # The preparation runs arrive while preparation is active (no late arrivals), then canary begins.
            created.extend(seed_evaluations(phases=(PhaseKind.PREPARATION,)))
            enter_canary(rollout, users, at)

        with transaction.atomic():
            result = seed_demo(password=password, enter_canary=enter_canary_after_preparation_runs)
            result.created.extend(created)
            users = {u.username: u for u in get_user_model().objects.filter(username__in=[r.value for r in Role])}
            seed_governance(users, result)
            result.created.extend(seed_evaluations())
            seed_compliance(users, result)
        self.stdout.write(self.style.SUCCESS(result.summary()))
        self.stdout.write("Demo logins (username / password):")
        for username in result.usernames:
            self.stdout.write(f"  {username:<22} {password}")
