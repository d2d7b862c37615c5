import os

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from orgs import services
from orgs.audit import Actor
from orgs.models import Organization, Role


class Command(BaseCommand):
    help = "Create a user; with --org, also add them to that organization."

    def add_arguments(self, parser):
        parser.add_argument("--email", required=True)
        parser.add_argument("--name", default="")
        parser.add_argument(
            "--password-env",
            default="BONITO_USER_PASSWORD",
            help="environment variable holding the password (never a command-line argument)",
        )
        parser.add_argument("--org", help="slug of an organization to join")
        parser.add_argument("--role", default="member", choices=Role.values)

    def handle(self, *args, **opts):
        org = None
        if opts["org"]:
            org = Organization.objects.filter(slug=opts["org"]).first()
            if org is None:
                raise CommandError(f"No organization with slug {opts['org']}.")
        password = os.environ.get(opts["password_env"]) or None
        actor = Actor(via="cli")
        try:
            user = services.user_create(
                actor=actor, email=opts["email"], password=password, name=opts["name"]
            )
            if org is not None:
                services.membership_add(actor=actor, org=org, user=user, role=opts["role"])
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        note = (
            "" if password else " (no password: they sign in after a password reset or through SSO)"
        )
        self.stdout.write(f"Created user {user.email}{note}.")
