"""``python -m agents.runtime``: check the settings and credential sources, then serve."""

import os
import sys

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def main() -> int:
    import uvicorn

    from gateway.dataplane.http_protocol import SPEC as HEAD_DEADLINE

    from .credentials import Credentials, CredentialsError
    from .settings import SettingsError, configure_logging, load, prepare_state_dir

    try:
        # The level first (logging raises on a wrong one), so that load()'s warnings are
        # logged in the agent's format.
        configure_logging(os.environ)
        s = load()
        # Before uvicorn: the workers' app factory would meet it too late to stop cleanly.
        prepare_state_dir(s.state_dir)
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
