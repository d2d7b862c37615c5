"""``python -m agents.runtime``: check the settings and credential sources, then serve."""

import os
import sys

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def requeue_dead() -> int:
    """``python -m agents.runtime requeue-dead``: the usage records the control plane
    refused, set aside in the state folder's dead/, go back to its spool; the running agent
    sends them again (once their cause is fixed: a host clock that was ahead, an org
    restored). Refused again, they are set aside again."""
    from gateway.dataplane.usage import requeue_dead_letters

    from .settings import SettingsError, load

    try:
        s = load()
    except SettingsError as exc:
        print(f"bonito-agent: {exc}", file=sys.stderr)
        return 2
    try:
        moved, unreadable = requeue_dead_letters(s.dead_letter_dir, s.spool_dir)
    except OSError as exc:
        print(f"bonito-agent: {exc.strerror}: {exc.filename}", file=sys.stderr)
        return 1
    print(
        f"{moved} usage records put back in {s.spool_dir} for the agent to send again"
        + (f"; {unreadable} unreadable lines dropped" if unreadable else "")
    )
    return 0


def main() -> int:
    if sys.argv[1:2] == ["requeue-dead"]:
        return requeue_dead()
    if sys.argv[1:]:
        print("usage: python -m agents.runtime [requeue-dead]", file=sys.stderr)
        return 2
    import uvicorn

    from gateway.dataplane.http_protocol import SPEC as HEAD_DEADLINE

    from .credentials import Credentials, CredentialsError
    from .settings import (
        SettingsError,
        check_listen,
        configure_logging,
        load,
        prepare_state_dir,
    )

    try:
        # The level first (logging raises on a wrong one), so that load()'s warnings are
        # logged in the agent's format.
        configure_logging(os.environ)
        s = load()
        # Before uvicorn: the workers' app factory would meet it too late to stop cleanly.
        prepare_state_dir(s.state_dir)
        check_listen(s.host, s.port)
        Credentials.from_settings(s).check()  # a configured source's SDK must be installed
    except (SettingsError, CredentialsError) as exc:
        print(f"bonito-agent: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(
        "agents.runtime.app:create_app",
        factory=True,
        host=s.host,
        port=s.port,
        workers=s.workers,
        lifespan="on",
        http=HEAD_DEADLINE,  # a request's head must be whole within 30 s (slowloris)
        access_log=False,
        log_level="warning",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
