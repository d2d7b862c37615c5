"""Posting the real admin forms in tests: the data a browser would send back unchanged."""

from django import forms


def _add(data: dict, form) -> None:
    for name, field in form.fields.items():
        key = form.add_prefix(name)
        value = form[name].value()
        if isinstance(field, forms.BooleanField):
            if value:
                data[key] = "on"
        elif isinstance(value, list | tuple):
            data[key] = [str(v) for v in value]
        else:
            data[key] = "" if value is None else str(value)


def form_data(response, **changes) -> dict:
    """The change (or add) form on ``response``, inline formsets included, with ``changes``."""
    context = response.context
    data: dict = {}
    _add(data, context["adminform"].form)
    for inline in context["inline_admin_formsets"]:
        formset = inline.formset
        _add(data, formset.management_form)
        for form in formset.forms:
            _add(data, form)
    data.update(changes)
    return data
