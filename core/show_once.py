"""A secret shown once, after a redirect (post/redirect/get).

The POST that creates or rotates a secret keeps the raw value in the user's server-side
session and redirects; the one GET after it takes the value out of the session as it shows
it. Reloading that page then says the secret was already shown, and creates or rotates
nothing (a reloaded POST would). One slot per object and page, so two tabs each get theirs.
The page that shows it must be `Cache-Control: no-store`."""

_SLOT = "gateway.key_secret_once"  # the session key (its name predates personal tokens)


def keep(request, what: str, object_id, raw: str) -> None:
    kept = request.session.get(_SLOT) or {}
    kept[f"{what}:{object_id}"] = raw
    request.session[_SLOT] = kept


def take(request, what: str, object_id) -> str | None:
    """The secret kept for this object and page, removed from the session as it is read."""
    kept = request.session.get(_SLOT) or {}
    raw = kept.pop(f"{what}:{object_id}", None)
    if raw is not None:
        request.session[_SLOT] = kept  # saved: the secret is gone from the session
    return raw


def no_store(response):
    """A response (page or API answer) that carries a raw secret: no cache, proxy or
    browser keeps a copy."""
    response["Cache-Control"] = "no-store"
    return response
