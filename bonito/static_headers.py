"""Security headers on static files. WhiteNoise answers /static/ before the CSP and
clickjacking middleware run, so it adds them itself (WHITENOISE_ADD_HEADERS_FUNCTION): a
vendored HTML file (Swagger's oauth2-redirect.html) gets the same policy as every page."""

from csp.utils import build_policy
from django.conf import settings


def add_security_headers(headers, path, url) -> None:
    # The policy is built from CONTENT_SECURITY_POLICY, the one place it is written.
    policy = build_policy()
    if policy:
        headers["Content-Security-Policy"] = policy
    headers["X-Frame-Options"] = settings.X_FRAME_OPTIONS
