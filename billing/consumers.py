"""WebSocket consumer for the live log tail: the Logs page (its session) and the CLI's
`bonito logs --follow` (a personal access token in the handshake's Authorization header)."""

import time

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from core.sockets import remember_socket_loop
from orgs.access import amembers_version, members_group
from orgs.models import Membership

from . import live

# Close codes the page sees: not a member (or no such org), and access lost while open.
NOT_FOUND, FORBIDDEN = 4404, 4403


class LogTailConsumer(AsyncJsonWebsocketConsumer):
    groups_joined: tuple[str, ...] = ()
    allowed = False

    token_id: int | None = None
    session_key: str | None = None

    async def connect(self):
        slug = self.scope["url_route"]["kwargs"]["org_slug"]
        bearer = live.bearer_token(self.scope)
        if bearer is not None:
            # A token, and only the token: a session cookie sent along is not looked at.
            found = await database_sync_to_async(live.token_membership)(bearer, slug)
            membership, self.token_id = found if found else (None, None)
        else:
            user = self.scope.get("user")
            membership = None
            if user is not None and user.is_authenticated:
                membership = await database_sync_to_async(
                    lambda: Membership.objects.filter(org__slug=slug, user=user).first()
                )()
            session = self.scope.get("session")
            self.session_key = getattr(session, "session_key", None)
        if membership is None:
            await self.close(code=NOT_FOUND)  # same answer for "no such org" and "not yours"
            return
        self.org_id, self.user_id = membership.org_id, membership.user_id
        # Read the version before checking, so a change racing the check is seen at the next push.
        self.version = await amembers_version(self.org_id)
        self.checked_at = time.monotonic()
        if not await self._allowed():
            await self.close(code=FORBIDDEN)
            return
        remember_socket_loop()
        self.groups_joined = (live.group_name(self.org_id), members_group(self.org_id))
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        self.allowed = True
        await self.accept()

    async def disconnect(self, code):
        await self._leave()

    async def usage_rows(self, event):
        if await self._still_allowed():
            await self.send_json({"rows": event["rows"]})

    async def members_changed(self, event):
        await self._still_allowed()

    async def _still_allowed(self) -> bool:
        if not self.allowed:
            return False
        version = await amembers_version(self.org_id)
        if version == self.version and time.monotonic() - self.checked_at < live.RECHECK_S:
            return True  # nothing changed: no query
        self.version, self.checked_at = version, time.monotonic()
        if await self._allowed():
            return True
        self.allowed = False
        await self._leave()
        await self.close(code=FORBIDDEN)
        return False

    async def _allowed(self) -> bool:
        return await database_sync_to_async(live.tail_allowed)(
            org_id=self.org_id,
            user_id=self.user_id,
            session_key=self.session_key,
            token_id=self.token_id,
        )

    async def _leave(self):
        groups, self.groups_joined = self.groups_joined, ()
        for group in groups:
            await self.channel_layer.group_discard(group, self.channel_name)
