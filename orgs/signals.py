from django.contrib.auth.signals import user_logged_in, user_logged_out
from django.dispatch import receiver


@receiver(user_logged_in)
def apply_admin_emails_at_login(sender, request, user, **kwargs):
    from .services import user_sync_platform_admin

    user_sync_platform_admin(user=user)


@receiver(user_logged_out)
def recheck_live_sockets_at_logout(sender, request, user, **kwargs):
    # Open live-tail sockets of this session re-check, find it gone, and close.
    if user is not None:
        from .access import members_changed

        members_changed(user.memberships.values_list("org_id", flat=True))
