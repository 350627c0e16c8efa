"""``manage.py seed_demo``: demo users (one per role), tenants, rollouts and their records. Idempotent.

It lives in the top app so it can lay down every app's demo data in order.
"""

from django.core.management.base import BaseCommand

from evaluations.demo import seed_evaluations
from rollout.demo import seed_demo


class Command(BaseCommand):
    help = "Load demo users, tenants and rollouts (idempotent: a second run changes nothing)."

    def add_arguments(self, parser):
        parser.add_argument("--password", default="demo", help="Password of the demo users (default: demo).")

    def handle(self, *args, password: str, **options):
        result = seed_demo(password=password)
        result.created.extend(seed_evaluations())
        self.stdout.write(self.style.SUCCESS(result.summary()))
        self.stdout.write("Demo logins (username / password):")
        for username in result.usernames:
            self.stdout.write(f"  {username:<22} {password}")
