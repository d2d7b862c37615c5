"""What every app's REST endpoints share: the org-scoped view, the acting user, money
fields read exactly, serializers whose relations only see the org's rows, and the one
exception handler (a service's ValidationError is a 400)."""

from django.core.exceptions import ObjectDoesNotExist
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from django.http import Http404
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from core import strategies
from core.client_ip import client_ip
from core.numbers import describe, to_decimal
from core.text import shown

from .audit import Actor
from .rest_auth import OrgRole


def actor(request) -> Actor:
    return Actor(user=request.user, ip=client_ip(request), via="api")


def exception_handler(exc, context):
    """DRF's handler (settings.REST_FRAMEWORK["EXCEPTION_HANDLER"]), plus: the Django
    ValidationError a service (or a selector reading filters) raises is a 400 with DRF's
    field -> messages body, {"detail": [...]} when it names no field. The views call the
    services and let it rise; DRF rolls the request's transaction back as for its own."""
    if isinstance(exc, DjangoValidationError):
        exc = ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}
        )
    elif isinstance(exc, Http404):
        exc = _not_found(context)
    return drf_exception_handler(exc, context)


def _not_found(context) -> NotFound:
    """An object the org does not have (another org's id gets the same answer as one that
    does not exist), named in words: Django's "No RoutingPolicy matches the given query."
    said the server's class names."""
    view = context.get("view")
    model = getattr(getattr(view, "queryset", None), "model", None)
    kwargs = context.get("kwargs") or {}
    lookup = getattr(view, "lookup_url_kwarg", None) or getattr(view, "lookup_field", "pk")
    pk = kwargs.get(lookup)
    request = context.get("request")
    # A format asked for that the API does not speak (?format=xml, .yaml) is a 404 of the
    # format, not of the object: said as no object would be a false "no such" for one.
    asked_format = "format" in kwargs or (request is not None and "format" in request.GET)
    if model is None or pk is None or asked_format:
        return NotFound()
    noun = _NOUNS.get(model._meta.label, model._meta.verbose_name)
    return NotFound(f"No {noun} {str(pk)[:100]} in this org.")  # as the CLI said it


# What the dashboard calls them, where the model's own name is not that.
_NOUNS = {
    "gateway.ApiKey": "key",
    "billing.UsageRecord": "request",
    "gateway.ProviderConnection": "provider",
    "gateway.ModelCatalogEntry": "model",
    "orgs.AuditLog": "audit entry",
    "orgs.Membership": "member",
    "orgs.PersonalAccessToken": "token",
}


class MoneyField(serializers.DecimalField):
    """A DecimalField that reads a JSON number or a string exactly from its text, in ASCII
    digits only (Decimal() also reads "٣" as 3), and refuses negative amounts."""

    def to_internal_value(self, data):
        try:
            number = to_decimal(data)
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc
        if number < 0:
            raise ValidationError("must not be negative.")
        return super().to_internal_value(number)


class SmartSettingsField(serializers.DictField):
    """A ``smart`` settings mapping (the service checks what is in it): anything else is
    refused in the words of every other way in, not DRF's 'Expected a dictionary of items
    but got type "str"'."""

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise ValidationError(
                "smart must be a mapping of settings (classifier, aggressiveness, thresholds, "
                f"ab, keywords, within), not {describe(data)}."
            )
        return super().to_internal_value(data)


class StrategyField(serializers.ChoiceField):
    """A routing strategy from the one registry; an unknown one is refused naming the
    allowed ones (the same message as every other way in)."""

    def __init__(self, **kwargs):
        super().__init__(choices=strategies.choices(), **kwargs)

    def to_internal_value(self, data):
        problem = strategies.error_for(data)
        if problem:
            raise ValidationError(problem)
        return data


class TextOnly:
    """A model's text field over REST: text only. DRF's CharField takes a number as its
    text (``{"auto_model_alias": 5}`` was saved as "5", ``{"model_name": 5}`` made the
    model "5"), where the config file refuses it ("must be text (quote it), not 5"): the
    same refusal here, led by ``refusal``."""

    refusal = "Must be text"

    def to_internal_value(self, data):
        if not isinstance(data, str):
            hint = " (quote it)" if type(data) in (int, float) else ""
            raise ValidationError(f"{self.refusal}{hint}, not {describe(data)}.")
        return super().to_internal_value(data)


class Text(TextOnly, serializers.CharField):
    pass


class NameText(Text):
    """A name in a list of names (models, providers, regions, tiers)."""

    refusal = "A name is text"


class Slug(TextOnly, serializers.SlugField):
    pass


class ModelSerializer(serializers.ModelSerializer):
    """Every app's ModelSerializer: a model's text fields are Text (numbers refused)."""

    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.CharField: Text,
        models.TextField: Text,
        models.SlugField: Slug,
    }


class MoneySerializer(ModelSerializer):
    """A ModelSerializer whose model DecimalFields (money, prices) are MoneyFields."""

    serializer_field_mapping = {
        **ModelSerializer.serializer_field_mapping,
        models.DecimalField: MoneyField,
    }


class OrgView:
    permission_classes = [OrgRole]

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)  # authentication and permissions first
        # PostgreSQL refuses NUL in text: a filter holding one is a 400, never a 500.
        for name, value in request.query_params.items():
            if "\x00" in value or "\x00" in name:
                raise ValidationError(
                    {name.replace("\x00", ""): ["must not contain NUL characters."]}
                )

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no request, no org
            return self.queryset
        return self.org_queryset()

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "org": getattr(self.request, "org", None)}


class NameRelatedField(serializers.SlugRelatedField):
    """A row chosen by its name (``slug_field``): text (a number or a list is refused, not
    read as its repr). A NUL in the name is refused before the lookup: PostgreSQL cannot
    compare one, and the query would fail with a 500."""

    def to_internal_value(self, data):
        if not isinstance(data, str) or "\x00" in data:  # a number, a list: not a name
            self.fail("invalid")
        try:
            return self.get_queryset().get(**{self.slug_field: data})
        except ObjectDoesNotExist:  # the name quoted, cut short (5,000 characters echoed)
            self.fail("does_not_exist", slug_name=self.slug_field, value=shown(data))
        except (TypeError, ValueError):
            self.fail("invalid")


MAX_ID = 2**63 - 1  # the largest id a row can have (a BigAutoField)


class IdRelatedField(serializers.PrimaryKeyRelatedField):
    """A row chosen by its id: a whole number (or its digits as text). A fraction was
    truncated (``{"team": 2.9}`` chose team 2) and true read as 1."""

    def to_internal_value(self, data):
        whole = (
            (isinstance(data, int) and not isinstance(data, bool))
            or (isinstance(data, float) and data.is_integer())
            or (isinstance(data, str) and data.isascii() and data.isdigit())
        )
        if not whole:
            self.fail("incorrect_type", data_type=describe(data))
        if len(str(data)) > 19 or not 0 < int(data) <= MAX_ID:  # int() of 5,000 digits: a 500
            self.fail("does_not_exist", pk_value=describe(str(data)))
        return super().to_internal_value(int(data))


class OrgScopedFields:
    """Serializer mixin: relation fields named in ``org_scoped`` only accept this org's rows."""

    org_scoped: dict = {}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        org = self.context.get("org")
        if org is not None:
            for name, model in self.org_scoped.items():
                self.fields[name].queryset = model.objects.for_org(org)
        for name in self.org_scoped:
            # In the API's words ("No team 9 in this organization."), not DRF's ("Object
            # with name=2 does not exist.", 'Invalid pk "9" - object does not exist.').
            what = name.replace("_", " ")
            field = self.fields[name]
            if isinstance(field, serializers.SlugRelatedField):
                field.error_messages["does_not_exist"] = (
                    f"No {what} named {{value}} in this organization."
                )
                field.error_messages["invalid"] = f"A {what} is given by its name (text)."
            else:
                field.error_messages["does_not_exist"] = (
                    f"No {what} {{pk_value}} in this organization."
                )
                field.error_messages["incorrect_type"] = (
                    f"A {what} is given by its id (a whole number), not {{data_type}}."
                )
                if not isinstance(field, IdRelatedField):
                    raise TypeError(f"{name}: an org-scoped id is an IdRelatedField")


class OrgSettingsView(OrgView, APIView):
    """GET/PUT of an org's one-row settings through its audited service function."""

    model = None
    serializer = None

    @staticmethod
    def service(**kwargs):
        raise NotImplementedError

    def get(self, request):
        row = self.model.objects.filter(org=request.org).first() or self.model(org=request.org)
        return Response(self.serializer(row).data)

    def put(self, request):
        serializer = self.serializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        row = type(self).service(actor=actor(request), org=request.org, **serializer.validated_data)
        return Response(self.serializer(row).data)
