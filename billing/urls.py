from django.urls import path

from . import views

# Pages under /o/<org_slug>/ and their places in the navigation (see orgs/urls.py).
org_urlpatterns = [
    path("", views.overview, name="overview"),
    path("usage/", views.usage, name="usage"),
    path("usage/export.csv", views.usage_csv, name="usage_csv"),
    path("usage/statement.csv", views.usage_statement, name="usage_statement"),
    path("logs/", views.logs, name="logs"),
    path("logs/<str:record_id>/", views.log_detail, name="log_detail"),
    path("budgets/", views.budgets, name="budgets"),
    path("budgets/new/", views.budget_create, name="budget_create"),
    path("budgets/<str:budget_id>/edit/", views.budget_edit, name="budget_edit"),
    path("budgets/<str:budget_id>/delete/", views.budget_remove, name="budget_delete"),
    path("notices/<str:notice_id>/dismiss/", views.notice_dismiss, name="notice_dismiss"),
]
nav = [
    (10, "overview", "Overview"),
    (30, "usage", "Usage"),
    (40, "logs", "Logs"),
    (55, "budgets", "Budgets"),
]
