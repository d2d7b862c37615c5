from pathlib import Path

import yaml
from django.core.management.base import BaseCommand, CommandError

from gateway.config import EXTENSIONS, smart_price_warnings
from orgs import secrets_check
from orgs.audit import Actor
from orgs.config import ConfigError, config_apply, config_load


class Command(BaseCommand):
    help = "Apply a declarative YAML config (orgs, teams, members, …). All of it or none of it."

    def add_arguments(self, parser):
        parser.add_argument("file")
        secrets_check.add_argument(parser)

    def handle(self, *args, **opts):
        secrets_check.checked(opts["other_secrets"])
        path = Path(opts["file"])
        try:
            data = config_load(path.read_text())
        except FileNotFoundError as exc:
            raise CommandError(f"{path}: no such file.") from exc
        except yaml.YAMLError as exc:
            raise CommandError(f"{path}: not valid YAML: {exc}") from exc
        try:
            orgs = config_apply(actor=Actor(via="apply_config"), data=data, extensions=EXTENSIONS)
        except ConfigError as exc:
            raise CommandError(f"{path}: {exc}") from exc
        self.stdout.write(f"Applied {path}: {', '.join(o.slug for o in orgs) or 'no orgs'}.")
        # What the Routing page warns of (a lower smart tier dearer than the top one): said
        # here too, on stderr, once the whole file is in; applied all the same.
        for i, (org, spec) in enumerate(zip(orgs, data["orgs"], strict=True)):
            for warning in smart_price_warnings(org, spec):
                self.stderr.write(self.style.WARNING(f"Warning: {path}: orgs[{i}].{warning}"))
