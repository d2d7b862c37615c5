"""``manage.py run_agent``: the VPC agent (``python -m agents.runtime``), in place of this process."""

import os
import sys

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run the Bonito VPC agent (python -m agents.runtime); settings from BONITO_* variables."

    def handle(self, *args, **options):
        # exec: the agent owns the process (signals, exit code) and loads no Django.
        os.execv(sys.executable, [sys.executable, "-m", "agents.runtime"])  # noqa: S606
