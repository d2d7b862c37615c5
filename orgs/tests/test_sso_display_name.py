"""An IdP's display name follows the rule of names (docs/security.md): what it refuses
(bidi controls, zero widths, line breaks) is dropped, not refused, so the sign-in works and
the Team page shows no name that displays as another."""

# ruff: noqa: F811  (the fixtures imported from test_sso are parameters here)

import pytest
from django.test import Client

from orgs.models import User

from .test_sso import GROUPS, SP, _no_acs_limit, acme_sso, idp, post, start  # noqa: F401

pytestmark = pytest.mark.django_db


def _sign_in(idp, name):
    client = Client()
    xml = idp.signed_response(
        **SP,
        in_response_to=start(client),
        name_id="dana@acme.test",
        attributes={"email": ["dana@acme.test"], "name": [name], GROUPS: ["Engineering"]},
    )
    return post(client, xml)


def test_an_idp_display_name_is_cleaned_not_refused(acme_sso, idp):
    response = _sign_in(idp, "Dana\u202e \u200bScully\n(IT)")
    assert response.status_code == 302 and response["Location"] == "/o/acme/keys/"
    assert User.objects.get(email="dana@acme.test").name == "Dana Scully (IT)"
    # At the next sign-in the name is updated the same way; a name in any script is kept.
    assert _sign_in(idp, "Дана Скалли 👩\u200d💻").status_code == 302
    assert User.objects.get(email="dana@acme.test").name == "Дана Скалли 👩\u200d💻"
