"""Reading dashboard form input the same way on every page: the field types the pages'
Django forms share (whole numbers, comma-separated lists, an org's rows by id) and the
one-line message a page flashes for a form's or a service's errors."""

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import ProhibitNullCharactersValidator

from .numbers import whole
from .text import split_csv

MAX_ID = 2**63 - 1  # the largest primary key; a larger "id" is no row, never a 500


def form_error(exc: Exception, labels: dict) -> str:
    """A service's error for a form, each message after the label of its field."""
    if isinstance(exc, ValidationError) and hasattr(exc, "error_dict"):
        return _joined(
            f"{labels.get(name, name.replace('_', ' ').capitalize())}: {_joined(msgs)}"
            if name != "__all__"
            else _joined(msgs)
            for name, msgs in exc.message_dict.items()
        )
    return _joined(getattr(exc, "messages", [str(exc)]))


def _joined(parts) -> str:
    """Messages one after another: after a full stop a space, else "; " (never ".;")."""
    out = ""
    for part in parts:
        if out:
            out += " " if out.endswith((".", "!", "?")) else "; "
        out += part
    return out


def form_labels(form: forms.BaseForm) -> dict:
    """Field name -> the label a page shows for it."""
    return {name: str(field.label) for name, field in form.fields.items() if field.label}


def form_message(form: forms.BaseForm, exc: ValidationError | None = None) -> str:
    """What a page flashes for a bound form that is not valid, or for the ValidationError
    ``exc`` its service raised: each message after its field's label."""
    if exc is None:
        exc = ValidationError(form.errors.as_data())
    return form_error(exc, form_labels(form))


def _no_nul(text: str) -> str:
    # Django's CharField checks this after to_python, which here is a list or a number.
    ProhibitNullCharactersValidator()(text)
    return text


class WholeNumberField(forms.Field):
    """A whole number typed in ASCII digits within [minimum, maximum] (core.numbers.whole:
    Django's IntegerField also reads "٣" as 3); empty is ``empty_value``."""

    def __init__(self, *, minimum=0, maximum=None, empty_value=None, **kwargs):
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)
        self.bounds = {"minimum": minimum, **({"maximum": maximum} if maximum else {})}
        self.empty_value = empty_value

    def to_python(self, value):
        text = _no_nul(str(value if value is not None else "")).strip()
        if not text:
            return self.empty_value
        try:
            return whole(text, **self.bounds)
        except ValueError as exc:
            raise ValidationError(str(exc), code="invalid") from None


class NameListField(forms.CharField):
    """Names typed in one box, comma-separated: 'a, b,,c ' is ['a', 'b', 'c'] (split_csv,
    as the command line reads them). Each name is at most ``max_item_length`` characters."""

    def __init__(self, *, max_item_length=200, **kwargs):
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)
        self.max_item_length = max_item_length

    def to_python(self, value):
        items = split_csv(_no_nul(super().to_python(value)))
        for item in items:
            if len(item) > self.max_item_length:
                raise ValidationError(
                    f"each entry is at most {self.max_item_length} characters.", code="max_length"
                )
        return items


class WholeNumberListField(NameListField):
    """Whole numbers typed in one box, comma-separated, each within [minimum, maximum]."""

    def __init__(self, *, minimum=0, maximum=None, **kwargs):
        super().__init__(**kwargs)
        self.number = WholeNumberField(minimum=minimum, maximum=maximum)

    def to_python(self, value):
        return [self.number.to_python(item) for item in super().to_python(value)]


class OrgRowField(forms.ModelChoiceField):
    """One of the org's rows, chosen by id. The id is read in ASCII digits within a primary
    key's range first (ModelChoiceField would read "٣" as 3 and pass 10**30 to the
    database); anything else, another org's row included, is "not one of the choices"."""

    def __init__(self, model, **kwargs):
        kwargs.setdefault("required", False)
        super().__init__(queryset=model.objects.none(), **kwargs)

    def for_org(self, org):
        self.queryset = self.queryset.model.objects.for_org(org)

    def to_python(self, value):
        if value in self.empty_values:
            return None
        try:
            whole(_no_nul(str(value)), minimum=1, maximum=MAX_ID)
        except (ValueError, ValidationError):
            raise ValidationError(
                self.error_messages["invalid_choice"], code="invalid_choice"
            ) from None
        return super().to_python(str(value).strip())


class OrgForm(forms.Form):
    """A form whose OrgRowFields only see ``org``'s rows."""

    def __init__(self, *args, org, **kwargs):
        super().__init__(*args, **kwargs)
        self.org = org
        for field in self.fields.values():
            if isinstance(field, OrgRowField):
                field.for_org(org)
