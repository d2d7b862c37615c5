"""The base every ModelAdmin that writes uses, so the write goes through a service."""

from django.contrib import admin, messages
from django.contrib.admin.widgets import AutocompleteSelect
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpResponseRedirect
from django.urls import reverse


def _an_id(value) -> bool:
    text = str(value)
    return text.isascii() and text.isdigit() and int(text) < 2**63


class _AutocompleteSelect(AutocompleteSelect):
    """Django's, but a posted value that is no id is not looked up when the form is drawn
    again with its errors (the lookup raised ValueError: a 500 instead of the form)."""

    def optgroups(self, name, value, attr=None):
        return super().optgroups(name, [v for v in value if v in ("", None) or _an_id(v)], attr)


class ServiceAdminMixin:
    """For ModelAdmins whose writes all go through service functions.

    Subclasses save and delete by calling services (which audit and schedule side effects
    themselves). A ValidationError a service raises (the last admin of an org, a budget
    for another org's team) rolls back everything the request did, including inlines and
    bulk actions, and brings the admin back to the page with the reason: never a 500."""

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if "widget" not in kwargs and db_field.name in self.get_autocomplete_fields(request):
            kwargs["widget"] = _AutocompleteSelect(
                db_field, self.admin_site, using=kwargs.get("using")
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def _refusable(self, request, view, *args, back=None, **kwargs):
        if request.method != "POST":
            return view(request, *args, **kwargs)
        try:
            with transaction.atomic():
                return view(request, *args, **kwargs)
        except ValidationError as exc:
            self.message_user(request, " ".join(exc.messages), messages.ERROR)
            return HttpResponseRedirect(back or request.get_full_path())

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        return self._refusable(request, super().changeform_view, object_id, form_url, extra_context)

    def changelist_view(self, request, extra_context=None):
        return self._refusable(request, super().changelist_view, extra_context)

    def delete_view(self, request, object_id, extra_context=None):
        opts = self.model._meta
        back = reverse(
            f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_change", args=[object_id]
        )
        return self._refusable(request, super().delete_view, object_id, extra_context, back=back)

    def user_change_password(self, request, id, form_url=""):
        # The User admin's password page (only UserAdmin routes here): a password change the
        # service refuses (the last admin of an org left without one) is shown as a message.
        return self._refusable(request, super().user_change_password, id, form_url)

    def delete_queryset(self, request, queryset):
        # The bulk "Delete selected" action: each object through delete_model's service.
        for obj in queryset:
            self.delete_model(request, obj)

    def save_model(self, request, obj, form, change):
        raise NotImplementedError(f"{type(self).__name__} must save through a service.")

    def delete_model(self, request, obj):
        raise NotImplementedError(f"{type(self).__name__} must delete through a service.")


class ServiceModelAdmin(ServiceAdminMixin, admin.ModelAdmin):
    pass


def readonly_except(model, *editable) -> list[str]:
    """Every concrete field of ``model`` but ``editable``, for get_readonly_fields."""
    return [f.name for f in model._meta.fields if f.name not in editable]


class ReadOnlyAdminMixin:
    """Rows written elsewhere (usage, audit, notices, the catalog) or only by an action that
    calls a service (revoking keys): the admin shows them and changes nothing itself."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
