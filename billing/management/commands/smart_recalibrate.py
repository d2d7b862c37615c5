"""Re-calibrate a smart routing policy's top threshold from the org's feedback."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from billing.smart_calibration import (
    MIN_RATED,
    ORG_DEFAULT,
    recalibration_summary,
    smart_recalibrate,
)
from orgs.audit import Actor
from orgs.models import Organization


class Command(BaseCommand):
    help = (
        "Move a smart policy's (or the org default's) top threshold by the feedback its "
        "requests got (docs/smart-routing.md)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True, help="the organization's slug")
        parser.add_argument(
            "--policy",
            default=ORG_DEFAULT,
            help="the smart routing policy's name; omit it, or give '(org default)' as the "
            "analytics name it, for the org's default smart routing (bn- keys asking for its "
            "alias, `auto`)",
        )
        parser.add_argument("--min-rated", type=int, default=MIN_RATED)

    def handle(self, *args, org, policy, min_rated, **options):
        found = Organization.objects.filter(slug=org).first()
        if found is None:
            raise CommandError(f"No organization with the slug {org!r}.")
        try:
            moved = smart_recalibrate(
                actor=Actor(via="cli"), org=found, name=policy, min_rated=min_rated
            )
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        self.stdout.write(recalibration_summary(moved))
