"""Helpers of the invitation tests."""


def rest_invite(client, org, email):
    """``client`` invites ``email`` (a viewer) to ``org`` through the REST API."""
    return client.post(
        "/api/gateway/invitations",
        {"email": email, "role": "viewer"},
        content_type="application/json",
        headers={"x-bonito-org": org.slug},
    )
