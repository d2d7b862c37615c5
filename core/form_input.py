"""Reading dashboard form input the same way on every page."""

from django.core.exceptions import ValidationError

from .numbers import whole


def form_error(exc: Exception, labels: dict) -> str:
    """A service's error for a form, each message after the label of its field."""
    if isinstance(exc, ValidationError) and hasattr(exc, "error_dict"):
        return "; ".join(
            f"{labels.get(name, name.replace('_', ' ').capitalize())}: {' '.join(msgs)}"
            if name != "__all__"
            else " ".join(msgs)
            for name, msgs in exc.message_dict.items()
        )
    return " ".join(getattr(exc, "messages", [str(exc)]))


def whole_field(data, name, default=None, **bounds):
    """A form's whole-number field, or a ValidationError naming it."""
    value = data.get(name, "").strip()
    if not value:
        return default
    try:
        return whole(value, **bounds)
    except ValueError as exc:
        raise ValidationError({name: str(exc)}) from exc
