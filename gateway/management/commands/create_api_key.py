from argparse import ArgumentTypeError

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from core.numbers import whole
from core.text import split_csv
from gateway import services
from governance.models import RoutingPolicy
from orgs import secrets_check
from orgs.audit import Actor
from orgs.models import Organization, Team


def _limit(text: str) -> int:
    """A key limit as the dashboard reads it: ASCII digits, at least 1."""
    try:
        return whole(text, minimum=1)
    except ValueError as exc:
        raise ArgumentTypeError(str(exc)) from None


class Command(BaseCommand):
    help = "Create a bn- key (or an rt- key with --routing-policy). The raw key is printed alone on the last line."

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True, help="organization slug")
        parser.add_argument("--name", required=True)
        parser.add_argument(
            "--models", help="comma-separated allowed models (default: all the org allows)"
        )
        parser.add_argument(
            "--providers", help="comma-separated allowed providers (names or kinds)"
        )
        parser.add_argument("--team", help="team name")
        parser.add_argument("--rpm", type=_limit)
        parser.add_argument("--tpm", type=_limit)
        parser.add_argument("--expires", help=services.KEY_EXPIRY_HELP)
        parser.add_argument("--routing-policy", help="name of a routing policy: makes an rt- key")
        secrets_check.add_argument(parser)

    def handle(self, *args, **opts):
        secrets_check.checked(opts["other_secrets"], credentials=False)
        org = Organization.objects.filter(slug=opts["org"]).first()
        if org is None:
            raise CommandError(f"No organization with slug {opts['org']}.")
        team = None
        if opts["team"]:
            team = Team.objects.for_org(org).filter(name=opts["team"]).first()
            if team is None:
                raise CommandError(f"No team {opts['team']!r} in {org.slug}.")
        routing_policy = None
        if opts["routing_policy"]:
            routing_policy = (
                RoutingPolicy.objects.for_org(org).filter(name=opts["routing_policy"]).first()
            )
            if routing_policy is None:
                raise CommandError(f"No routing policy {opts['routing_policy']!r} in {org.slug}.")
        try:  # read as every way in reads it: a date alone is the end of that day, UTC
            expires = services.key_expiry(opts["expires"])
        except ValidationError as exc:
            raise CommandError(f"--expires {' '.join(exc.messages)}") from None
        try:
            key, raw = services.api_key_create(
                actor=Actor(via="cli"),
                org=org,
                name=opts["name"],
                allowed_models=split_csv(opts["models"]),
                allowed_providers=split_csv(opts["providers"]),
                team=team,
                rpm_limit=opts["rpm"],
                tpm_limit=opts["tpm"],
                expires_at=expires,
                routing_policy=routing_policy,
            )
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        self.stderr.write(
            f"Created {key.name} ({key.masked}) for {org.slug}. It is shown only once:"
        )
        self.stdout.write(raw)
