"""Where the CLI keeps its servers and tokens: one JSON file, readable by its owner only.

$BONITO_CONFIG_DIR, else $XDG_CONFIG_HOME/bonito, else ~/.config/bonito. BONITO_URL and
BONITO_TOKEN (and BONITO_API_KEY for `chat`) override the profile, for CI."""

import json
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8000"


def config_dir() -> Path:
    if os.environ.get("BONITO_CONFIG_DIR"):
        return Path(os.environ["BONITO_CONFIG_DIR"])
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "bonito"


def config_file() -> Path:
    return config_dir() / "config.json"


def load() -> dict:
    try:
        data = json.loads(config_file().read_text())
    except FileNotFoundError:
        return {"default": "default", "profiles": {}}
    except (OSError, ValueError) as exc:
        raise ProfileError(f"cannot read {config_file()}: {exc}") from None
    data.setdefault("profiles", {})
    data.setdefault("default", "default")
    return data


def save(data: dict) -> None:
    """Written to a new file created with mode 0600, then renamed over the old one."""
    folder = config_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = config_file()
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


class ProfileError(Exception):
    pass


@dataclass
class Profile:
    name: str
    url: str
    token: str | None
    org: str | None
    api_key: str | None
    source: str  # "profile", "environment" or "none": what auth status reports


def resolve(profile: str | None, org: str | None) -> Profile:
    """The profile named, else the one for ``org``, else the default; the environment wins."""
    data = load()
    profiles = data["profiles"]
    name = profile or os.environ.get("BONITO_PROFILE")
    if name is None and org:
        matches = [n for n, p in profiles.items() if p.get("org") == org]
        if len(matches) > 1:
            raise ProfileError(
                f"several profiles are for org {org!r} ({', '.join(matches)}): pick one with --profile."
            )
        name = matches[0] if matches else None
        if name is None and profiles and not os.environ.get("BONITO_TOKEN"):
            raise ProfileError(
                f"no profile is for org {org!r}: log in with `bonito auth login --org {org}`."
            )
    name = name or data["default"]
    stored = profiles.get(name, {})
    env_token = os.environ.get("BONITO_TOKEN")
    return Profile(
        name=name,
        url=(os.environ.get("BONITO_URL") or stored.get("url") or DEFAULT_URL).rstrip("/"),
        token=env_token or stored.get("token"),
        org=org or stored.get("org"),
        api_key=os.environ.get("BONITO_API_KEY") or stored.get("api_key"),
        source="environment" if env_token else ("profile" if stored.get("token") else "none"),
    )


def store(name: str, **fields) -> None:
    data = load()
    data["profiles"][name] = {k: v for k, v in fields.items() if v is not None}
    if len(data["profiles"]) == 1:
        data["default"] = name
    save(data)


def forget(name: str) -> bool:
    data = load()
    found = data["profiles"].pop(name, None) is not None
    save(data)
    return found
