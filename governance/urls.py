from django.urls import path

from . import views

# Pages under /o/<org_slug>/ and their places in the navigation (see orgs/urls.py).
org_urlpatterns = [
    path("audit/", views.audit_log, name="audit_log"),
    path("audit/export.csv", views.audit_csv, name="audit_csv"),
]
nav = [(98, "audit_log", "Audit log", "admin")]
