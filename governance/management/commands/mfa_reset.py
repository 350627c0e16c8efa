"""Remove a user's second factor (a lost phone): ``manage.py mfa_reset USERNAME --by SUPERUSER --reason TEXT``."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from governance import services
from rollout.errors import DomainError


class Command(BaseCommand):
    help = "Reset (remove) every second factor of a user; they enrol again at their next login. A ledger entry."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--by", required=True, help="the superuser who resets (recorded in the ledger)")
        parser.add_argument("--reason", required=True)

    def handle(self, *args, username: str, by: str, reason: str, **options):
        users = get_user_model().objects
        try:
            user, actor = users.get(username=username), users.get(username=by)
        except get_user_model().DoesNotExist as exc:
            raise CommandError(str(exc)) from exc
        try:
            kinds = services.mfa_reset(user=user, actor=actor, reason=reason)
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"Removed {', '.join(kinds) or 'nothing'} for {username}.")
