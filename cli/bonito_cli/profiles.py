"""Where the CLI keeps its servers and tokens: one JSON file, readable by its owner only.

$BONITO_CONFIG_DIR, else $XDG_CONFIG_HOME/bonito, else ~/.config/bonito. BONITO_URL and
BONITO_TOKEN (and BONITO_API_KEY for `chat`) override the profile, for CI."""

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .client import AUTH, FAILURE, USAGE

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
    if not isinstance(data, dict):
        data = None
    else:
        data.setdefault("profiles", {})
        data.setdefault("default", "default")
    if (
        data is None
        or not isinstance(data["profiles"], dict)
        or not isinstance(data["default"], str)
        or not all(isinstance(p, dict) for p in data["profiles"].values())
    ):
        raise ProfileError(
            f"{config_file()} is not a bonito CLI config (it needs "
            '{"default": NAME, "profiles": {NAME: {...}}}): fix it, or delete it and log in again.'
        )
    return data


def save(data: dict) -> None:
    """Written to a new file created with mode 0600, then renamed over the old one."""
    folder = config_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = config_file()
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except OSError as exc:
        raise ProfileError(
            f"cannot write the CLI's config folder {folder} ({exc.strerror or exc}): make it "
            "writable, or point BONITO_CONFIG_DIR at a folder you can write.",
            FAILURE,
        ) from None


class ProfileError(Exception):
    """A profile problem; ``code`` is the exit code (usage error unless said otherwise)."""

    def __init__(self, message: str, code: int = USAGE):
        super().__init__(message)
        self.code = code


@dataclass
class Profile:
    name: str
    url: str
    token: str | None
    org: str | None
    api_key: str | None
    source: str  # "profile", "environment" or "none": what auth status reports
    # Why the saved token is not used (saved for another URL): said when a command needs it.
    refused: str | None = None


def same_url(a: str | None, b: str | None) -> bool:
    return (a or "").rstrip("/").lower() == (b or "").rstrip("/").lower()


def resolve(
    profile: str | None, org: str | None, url: str | None = None, token: str | None = None
) -> Profile:
    """The profile named, else the one for ``org``, else the default; --url/--token, then the
    environment, win. A saved token (and bn- key) goes only to the URL it was saved for."""
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
        if name is None and profiles and not (token or os.environ.get("BONITO_TOKEN")):
            raise ProfileError(  # not logged in to that org: the auth exit code
                f"no profile is for org {org!r}: log in with `bonito auth login --org {org}`.",
                AUTH,
            )
    name = name or data["default"]
    stored = profiles.get(name, {})
    given_token = token or os.environ.get("BONITO_TOKEN")
    final_url = (url or os.environ.get("BONITO_URL") or stored.get("url") or DEFAULT_URL).rstrip(
        "/"
    )
    refused = None
    saved_token, saved_key = stored.get("token"), stored.get("api_key")
    if stored.get("url") and not same_url(stored["url"], final_url):
        if saved_token and not given_token:
            refused = (
                f"Profile {name!r} holds a token for {stored['url']}, not {final_url}: it is not "
                f"sent elsewhere. Log in there (`bonito --profile NEW auth login --url {final_url}`) "
                "or pass --token / BONITO_TOKEN."
            )
        saved_token = saved_key = None
    return Profile(
        name=name,
        url=final_url,
        token=given_token or saved_token,
        # A token from the command line or the environment may be for any org: the saved
        # profile's org says nothing about it.
        org=org or (None if given_token else stored.get("org")),
        api_key=os.environ.get("BONITO_API_KEY") or saved_key,
        source=(
            ("option" if token else "environment")
            if given_token
            else ("profile" if saved_token else "none")
        ),
        refused=refused,
    )


def login_target(profile: str | None, org: str | None, url: str | None) -> tuple[str, str]:
    """The profile `auth login` saves to and the URL it logs in to: --profile, else the
    profile for --org (a new one named after the org when there is none), else the default."""
    data = load()
    name = profile or os.environ.get("BONITO_PROFILE")
    if name is None and org:
        matches = [n for n, p in data["profiles"].items() if p.get("org") == org]
        if len(matches) > 1:
            raise ProfileError(
                f"several profiles are for org {org!r} ({', '.join(matches)}): pick one with --profile."
            )
        name = matches[0] if matches else (org if data["profiles"] else data["default"])
    name = name or data["default"]
    stored = data["profiles"].get(name, {})
    final = url or os.environ.get("BONITO_URL") or stored.get("url") or DEFAULT_URL
    return name, final.rstrip("/")


def store(name: str, **fields) -> None:
    data = load()
    data["profiles"][name] = {k: v for k, v in fields.items() if v is not None}
    if len(data["profiles"]) == 1:
        data["default"] = name
    save(data)


def forget(name: str) -> bool:
    data = load()
    found = data["profiles"].pop(name, None) is not None
    if found:
        save(data)
    return found
