"""WebSocket consumer for the Logs page's live tail."""

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from orgs.models import Membership

from .live import group_name, remember_socket_loop


class LogTailConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        user = self.scope.get("user")
        slug = self.scope["url_route"]["kwargs"]["org_slug"]
        membership = None
        if user is not None and user.is_authenticated:
            membership = await database_sync_to_async(
                lambda: (
                    Membership.objects.select_related("org")
                    .filter(org__slug=slug, user=user)
                    .first()
                )
            )()
        if membership is None:
            await self.close(code=4404)  # same answer for "no such org" and "not yours"
            return
        remember_socket_loop()
        self.group = group_name(membership.org_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def usage_rows(self, event):
        await self.send_json({"rows": event["rows"]})
