"""manage.py reencrypt_secrets [--dry-run] [--other-secrets]: every secret stored
encrypted (provider credentials, SSO SP private keys, pending agent tokens) written again
under the newest of ENCRYPTION_KEYS, so the older keys can be dropped. Its content is
unchanged; each row is rewritten only if nothing wrote it since it was read. Shared config
deltas (core.ConfigChange.delta, which hold the deployments' credentials) sealed under an
older key are cleared (the workers build those themselves). A last pass checks that no
secret is left under an older key: a save that read a row before it was rewritten writes
the old ciphertext back, and the old key must not go then."""

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
        secrets_check.add_argument(parser)

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
            f"were; {changed} changed meanwhile."
        )
        cleared = self._deltas(dry)
        if cleared:
            self.stdout.write(f"{cleared} stored config deltas under an older key {verb} cleared.")
        behind = [] if dry else self._behind()
        if behind:
            raise CommandError(
                f"{len(behind)} are under an older key again (written meanwhile by a save "
                "that read them before, or by a process without the newest key): run it "
                "again before dropping the old key: " + "; ".join(behind)
            )
        if unreadable:
            raise CommandError(
                f"{len(unreadable)} cannot be decrypted with any of ENCRYPTION_KEYS (left as "
                "they are; enter them again, or add the key they were written with): "
                + "; ".join(unreadable)
            )

    @staticmethod
    def _deltas(dry: bool) -> int:
        """Stored config deltas not sealed under the newest key, cleared (counted only on a
        dry run): each holds its orgs' credentials, readable with the key it was sealed
        with, and none is needed (a worker that finds none builds the delta)."""
        from core.models import ConfigChange

        stale = [
            pk
            for pk, sealed in ConfigChange.objects.exclude(delta=None)
            .values_list("pk", "delta")
            .iterator()
            if not sealed_by_newest(bytes(sealed).decode("ascii", "replace"))
        ]
        if stale and not dry:
            ConfigChange.objects.filter(pk__in=stale).update(delta=None)
        return len(stale)

    @staticmethod
    def _behind() -> list[str]:
        """The readable secrets not under the newest key (after the pass: none unless
        something wrote one meanwhile)."""
        behind = []
        for label, column, name in ENCRYPTED:
            model = apps.get_model(label)
            rows = model.objects.exclude(**{column: ""}).values_list("pk", name, column)
            for pk, shown, token in rows.iterator():
                if not sealed_by_newest(token) and resealed(token) is not None:
                    behind.append(f"{label} {pk} ({name} {shown}): {column}")
        return behind
