from django.contrib.auth import views as auth_views
from django.urls import path

from . import sso_views, view_as_views, views
from .forms import LoginForm

# Pages under /o/<org_slug>/ (bonito/urls.py mounts every app's), and their places in the
# dashboard's navigation: (order, url name, label).
org_urlpatterns = [
    path("team/", views.team, name="team"),
    path("team/members/<int:membership_id>/role/", views.member_role, name="member_role"),
    path("team/members/<int:membership_id>/remove/", views.member_remove, name="member_remove"),
    path("team/teams/", views.team_create, name="team_create"),
    path("team/teams/<int:team_id>/", views.team_edit, name="team_edit"),
    path("team/teams/<int:team_id>/delete/", views.team_delete, name="team_delete"),
    path(
        "team/invitations/<int:invitation_id>/resend/",
        views.invitation_resend,
        name="invitation_resend",
    ),
    path(
        "team/invitations/<int:invitation_id>/revoke/",
        views.invitation_revoke,
        name="invitation_revoke",
    ),
    path("settings/", views.org_settings, name="settings"),
    path("settings/sso/", sso_views.sso_settings, name="sso_settings"),
    path("settings/tokens/", views.token_create, name="token_create"),
    path("settings/tokens/<int:token_id>/", views.token_created, name="token_created"),
    path("settings/digest/", views.digest_toggle, name="digest_toggle"),
    path("settings/tokens/<int:token_id>/revoke/", views.token_revoke, name="token_revoke"),
]
nav = [(90, "team", "Team"), (100, "settings", "Settings")]

urlpatterns = [
    path("", views.home, name="home"),
    path(
        "login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True, form_class=LoginForm),
        name="login",
    ),
    path("sso/", sso_views.discover, name="sso_discover"),
    path("sso/<slug:org_slug>/metadata/", sso_views.metadata, name="sso_metadata"),
    path("sso/<slug:org_slug>/login/", sso_views.sso_login, name="sso_login"),
    path("sso/<slug:org_slug>/acs/", sso_views.acs, name="sso_acs"),
    path("sso/<slug:org_slug>/sls/", sso_views.sls, name="sso_sls"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("password-reset/", views.PasswordResetView.as_view(), name="password_reset"),
    path(
        "password-reset/sent/",
        auth_views.PasswordResetDoneView.as_view(),
        name="password_reset_done",
    ),
    path(
        "password-reset/<uidb64>/<token>/",
        views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path(
        "password-reset/done/",
        auth_views.PasswordResetCompleteView.as_view(),
        name="password_reset_complete",
    ),
    path("orgs/", views.org_switcher, name="org_switcher"),
    path("invite/<str:token>/", views.invitation_accept, name="invitation_accept"),
    path("view-as/stop/", view_as_views.stop, name="view_as_stop"),
    path("view-as/<slug:org_slug>/start/", view_as_views.start, name="view_as_start"),
]
