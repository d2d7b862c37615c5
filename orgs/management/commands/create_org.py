from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from orgs import services
from orgs.audit import Actor
from orgs.models import Organization, User


class Command(BaseCommand):
    help = "Create an organization, optionally with an existing user as its admin."

    def add_arguments(self, parser):
        parser.add_argument("--slug", required=True)
        parser.add_argument("--name", required=True)
        parser.add_argument("--tier", default="free", choices=Organization.Tier.values)
        parser.add_argument(
            "--deployment-mode", default="shared", choices=Organization.DeploymentMode.values
        )
        parser.add_argument("--owner", help="email of an existing user who becomes the org's admin")

    def handle(self, *args, **opts):
        owner = None
        if opts["owner"]:
            owner = User.objects.filter(email__iexact=opts["owner"]).first()
            if owner is None:
                raise CommandError(
                    f"No user with email {opts['owner']}; create it with create_user first."
                )
        try:
            org = services.org_create(
                actor=Actor(via="cli"),
                name=opts["name"],
                slug=opts["slug"],
                tier=opts["tier"],
                deployment_mode=opts["deployment_mode"],
                owner=owner,
            )
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        self.stdout.write(f"Created organization {org.slug} ({org.name}, {org.tier}).")
