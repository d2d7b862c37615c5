"""manage.py reencrypt_secrets [--dry-run] [--other-secrets]: every secret stored
encrypted (provider credentials, SSO SP private keys, pending agent tokens) written again
under the newest of ENCRYPTION_KEYS, so the older keys can be dropped. Its content is
unchanged; each row is rewritten only if nothing wrote it since it was read."""

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError

from core.crypto import resealed, sealed_by_newest
from orgs import secrets_check

# (model, encrypted column, what names a row in the report)
ENCRYPTED = (
    ("gateway.ProviderConnection", "credentials_encrypted", "name"),
    ("orgs.SSOConfig", "sp_private_key", "org_id"),
    ("orgs.SSOConfig", "sp_previous_private_key", "org_id"),
    ("agents.OrgToken", "pending", "prefix"),
)


class Command(BaseCommand):
    help = (
        "Encrypt every stored secret again under the newest of ENCRYPTION_KEYS (after a new "
        "key was put first), so the older keys can be dropped."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--dry-run", action="store_true", help="count what would be rewritten; write nothing"
        )
        parser.add_argument(
            "--other-secrets",
            action="store_true",
            help="write under this process's secrets though the server last started with "
            "others (orgs.secrets_check)",
        )

    def handle(self, *args, **opts):
        dry = opts["dry_run"]
        if not dry:
            secrets_check.checked(opts["other_secrets"], keys=False)
        rewritten = current = changed = 0
        unreadable: list[str] = []
        for label, column, name in ENCRYPTED:
            model = apps.get_model(label)
            rows = model.objects.exclude(**{column: ""}).values_list("pk", name, column)
            for pk, shown, token in rows.iterator():
                if sealed_by_newest(token):
                    current += 1
                    continue
                new = resealed(token)
                if new is None:
                    unreadable.append(f"{label} {pk} ({name} {shown}): {column}")
                    continue
                if dry or model.objects.filter(pk=pk, **{column: token}).update(**{column: new}):
                    rewritten += 1
                else:
                    changed += 1  # written since it was read: under the newest key already
        verb = "would be" if dry else "were"
        self.stdout.write(
            f"{rewritten} {verb} encrypted again under the newest key; {current} already "
            f"were; {changed} changed meanwhile (written under the newest)."
        )
        if unreadable:
            raise CommandError(
                f"{len(unreadable)} cannot be decrypted with any of ENCRYPTION_KEYS (left as "
                "they are; enter them again, or add the key they were written with): "
                + "; ".join(unreadable)
            )
