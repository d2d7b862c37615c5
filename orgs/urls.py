from django.contrib.auth import views as auth_views
from django.urls import include, path

from . import views

section = views.section_placeholder

org_patterns = [
    path("", views.overview, name="overview"),
    path(
        "keys/",
        section(
            "keys", "API keys", "Create bn- keys for your apps here once the gateway is set up."
        ),
        name="keys",
    ),
    path(
        "usage/",
        section(
            "usage",
            "Usage",
            "Requests, tokens and spend appear here after the first call through the gateway.",
        ),
        name="usage",
    ),
    path(
        "logs/",
        section("logs", "Logs", "Every request through the gateway is listed here."),
        name="logs",
    ),
    path(
        "policies/",
        section(
            "policies", "Policies", "Model and provider allow-lists and spend caps for the org."
        ),
        name="policies",
    ),
    path(
        "routing/",
        section("routing", "Routing", "Routing strategies and rt- keys."),
        name="routing",
    ),
    path(
        "providers/",
        section("providers", "Providers", "Connect your cloud accounts and map deployments."),
        name="providers",
    ),
    path("team/", views.team, name="team"),
    path("team/members/<int:membership_id>/role/", views.member_role, name="member_role"),
    path("team/members/<int:membership_id>/remove/", views.member_remove, name="member_remove"),
    path("team/teams/", views.team_create, name="team_create"),
    path("team/teams/<int:team_id>/delete/", views.team_delete, name="team_delete"),
    path(
        "team/invitations/<int:invitation_id>/revoke/",
        views.invitation_revoke,
        name="invitation_revoke",
    ),
    path("settings/", views.org_settings, name="settings"),
]

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("password-reset/", auth_views.PasswordResetView.as_view(), name="password_reset"),
    path(
        "password-reset/sent/",
        auth_views.PasswordResetDoneView.as_view(),
        name="password_reset_done",
    ),
    path(
        "password-reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path(
        "password-reset/done/",
        auth_views.PasswordResetCompleteView.as_view(),
        name="password_reset_complete",
    ),
    path("orgs/", views.org_switcher, name="org_switcher"),
    path("invite/<str:token>/", views.invitation_accept, name="invitation_accept"),
    path("o/<slug:org_slug>/", include(org_patterns)),
]
