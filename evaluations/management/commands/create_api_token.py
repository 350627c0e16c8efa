"""``manage.py create_api_token --name NAME --scopes ingest,read [--expires-in-days N]``: prints the token once."""

from django.core.management.base import BaseCommand, CommandError

from rollout.context import Actor, acting_as
from rollout.errors import DomainError

from ...services import api_token_create


class Command(BaseCommand):
    help = "Create an API token; the token is printed once and only its hash is stored."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True, help="Who or what uses it, e.g. 'evaluation-harness'.")
        parser.add_argument("--scopes", required=True, help="Comma-separated: ingest, read.")
        parser.add_argument("--expires-in-days", type=int, default=None, help="Default: no expiry.")

    def handle(self, *args, name: str, scopes: str, expires_in_days: int | None, **options):
        with acting_as(Actor(kind="system", name="manage.py create_api_token")):
            try:
                token, raw = api_token_create(
                    name=name,
                    scopes=[s.strip() for s in scopes.split(",") if s.strip()],
                    expires_in_days=expires_in_days,
                    actor=None,
                    reason=f"Created with manage.py create_api_token (scopes {scopes})",
                )
            except DomainError as exc:
                raise CommandError(exc.message) from exc
        expiry = f"expires {token.expires_at:%Y-%m-%d %H:%M} UTC" if token.expires_at else "no expiry"
        self.stderr.write(f"Token {token.name!r} (scopes {', '.join(token.scopes)}; {expiry}). Shown once:")
        self.stdout.write(raw)
