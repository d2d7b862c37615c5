"""The agent's spool must fit the volume its state folder is on: past it, the volume's
writes fail (or the instance is evicted, its spool lost) long before the agent's own bound
(BONITO_SPOOL_MAX_BYTES, 1 GiB by default) drops the oldest records and says so."""

import re

from gateway.tests.external import ROOT

UNITS = {"Mi": 1024**2, "Gi": 1024**3}


def _bytes(text: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", text).groups()
    return int(number) * UNITS[unit]


def test_cloud_runs_in_memory_state_volume_holds_the_spool_bound():
    main = (ROOT / "deploy/terraform/gcp-cloud-run/main.tf").read_text()
    volume = _bytes(re.search(r'size_limit\s*=\s*"(\d+(?:Mi|Gi))"', main).group(1))
    spool = re.search(r'BONITO_SPOOL_MAX_BYTES\s*=\s*"(\d+)"', main)
    assert spool, "the module leaves the spool at 1 GiB on its in-memory volume"
    # room for the config cache, the journal and dead letters beside the spool
    assert int(spool.group(1)) <= volume // 2
