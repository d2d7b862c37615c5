from datetime import UTC, datetime

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from core.text import split_csv
from gateway import services
from governance.models import RoutingPolicy
from orgs.audit import Actor
from orgs.models import Organization, Team


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
        parser.add_argument("--rpm", type=int)
        parser.add_argument("--tpm", type=int)
        parser.add_argument("--expires", help="expiry date, YYYY-MM-DD or ISO 8601 (UTC)")
        parser.add_argument("--routing-policy", help="name of a routing policy: makes an rt- key")

    def handle(self, *args, **opts):
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
        expires = None
        if opts["expires"]:
            try:
                expires = datetime.fromisoformat(opts["expires"])
            except ValueError as exc:
                raise CommandError(
                    "--expires must be a date like 2027-01-31 or an ISO 8601 time."
                ) from exc
            if expires.tzinfo is None:
                expires = expires.replace(tzinfo=UTC)
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
