"""The /v1 data plane. Pure Python over an in-memory snapshot: no ORM, no Django models.

The same modules serve in the control plane and inside a customer's VPC agent; they
depend on two seams only, both handed to the Gateway: a config snapshot (a SnapshotSource,
state.py) and a usage sink (usage.py).
"""
