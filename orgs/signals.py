from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver


@receiver(user_logged_in)
def apply_admin_emails_at_login(sender, request, user, **kwargs):
    from .services import user_sync_platform_admin

    user_sync_platform_admin(user=user)
