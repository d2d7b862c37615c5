import json
import os

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction

from gateway.demo import demo_gateway_setup
from orgs import secrets_check, services
from orgs.audit import Actor
from orgs.models import Membership, Organization, Role, User

DEMO_SLUG = "demo"
DEMO_EMAIL = "admin@demo.bonito.local"
DEMO_PASSWORD = os.environ.get("BONITO_DEMO_PASSWORD", "bonito-demo-password")


class Command(BaseCommand):
    help = (
        "Create (idempotently) the demo org, admin and demo key. A later run changes nothing: "
        "it keeps the password and the key (shown once, when made); --new-key replaces the key."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print one JSON line")
        parser.add_argument("--force", action="store_true", help="allow a non-SQLite database")
        parser.add_argument(
            "--new-key", action="store_true", help="revoke the demo key and print a new one"
        )
        secrets_check.add_argument(
            parser,
            "with --new-key: make it under this process's secrets though the server "
            "last started with others (orgs.secrets_check)",
        )

    def handle(self, *args, **opts):
        if connection.vendor != "sqlite" and not opts["force"]:
            raise CommandError(
                f"demo creates a known admin password; refusing to run on a {connection.vendor} "
                "database. Pass --force if this really is a throwaway install."
            )
        if opts["new_key"]:  # a key the running server could not check would get 401
            secrets_check.checked(opts["other_secrets"], credentials=False)
        actor = Actor(via="demo")
        with transaction.atomic():
            user = User.objects.filter(email=DEMO_EMAIL).first()
            if user is None:
                user = services.user_create(
                    actor=actor, email=DEMO_EMAIL, password=DEMO_PASSWORD, name="Demo Admin"
                )
            # Only what differs is saved: a new password hash (even of the same password)
            # would sign out every open browser of the demo admin.
            changed = []
            if not user.check_password(DEMO_PASSWORD):
                user.set_password(DEMO_PASSWORD)
                changed.append("password")
            if not (user.is_staff and user.is_superuser):
                user.is_staff = user.is_superuser = True
                changed += ["is_staff", "is_superuser"]
            if changed:
                user.save(update_fields=changed)
            org = Organization.objects.filter(slug=DEMO_SLUG).first()
            if org is None:
                org = services.org_create(actor=actor, name="Demo Org", slug=DEMO_SLUG, tier="pro")
            if not Membership.objects.filter(org=org, user=user, role=Role.ADMIN).exists():
                services.membership_add(actor=actor, org=org, user=user, role=Role.ADMIN)
            raw_key, key = demo_gateway_setup(actor=actor, org=org, new_key=opts["new_key"])
        base_url = f"{settings.PUBLIC_BASE_URL}/v1"
        if opts["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "org": org.slug,
                        "admin_email": DEMO_EMAIL,
                        "admin_password": DEMO_PASSWORD,
                        "api_key": raw_key,  # None: the demo key made earlier is kept
                        "api_key_masked": key.masked,
                        "base_url": base_url,
                    }
                )
            )
            return
        root = settings.PUBLIC_BASE_URL
        self.stdout.write(
            "\nBonito demo is ready.\n"
            f"  Dashboard:      {root}/  (sign in as {DEMO_EMAIL} / {DEMO_PASSWORD})\n"
            f"  Platform admin: {root}/admin/\n"
            f"  Gateway:        {base_url}\n"
            + (
                f"  API key:        {raw_key}\n"
                if raw_key
                else f"  API key:        the demo key made earlier ({key.masked}; shown once). "
                "`manage.py demo --new-key` replaces it.\n"
            )
        )
        if secrets_check.problem(credentials=False):
            self.stdout.write(
                "  Note: this run's SECRET_KEY (or KEY_HASH_SECRET) is not the one the server "
                "last started with, so "
                + (
                    "the demo key made earlier gets 401 under it. Once the server runs with "
                    "this run's settings, `manage.py demo --new-key` (with them) makes one "
                    "that works.\n"
                    if raw_key is None
                    else "the key above works only with a server that runs with this run's "
                    "settings.\n"
                )
            )
