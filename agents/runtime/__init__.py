"""The Bonito agent: the /v1 data plane inside a customer's VPC, synced with the control plane.

No Django and no database here: the agent image carries the data plane (gateway.dataplane),
this package and the HTTP clients. Entry points: ``python -m agents.runtime`` and
``manage.py run_agent``. docs/agent.md describes what runs where and every setting.
"""

VERSION = "1.0.0"
