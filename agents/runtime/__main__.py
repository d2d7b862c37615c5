"""``python -m agents.runtime``: check the settings and credential sources, then serve."""

import logging
import os
import sys

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def main() -> int:
    import uvicorn

    from .credentials import Credentials, CredentialsError
    from .settings import SettingsError, load

    logging.basicConfig(
        level=os.environ.get("BONITO_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        s = load()
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
        access_log=False,
        log_level="warning",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
