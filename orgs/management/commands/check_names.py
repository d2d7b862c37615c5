"""manage.py check_names [--fix]: the stored names the names rule now refuses."""

import unicodedata

from django.core.management.base import BaseCommand
from django.db import IntegrityError, transaction

from core.names import KEYWORDS, LIST, NAME_FIELDS, TEXT
from core.text import codepoint, name_safe, refused_character, shown
from orgs.audit import Actor, audit_record, config_changed


def _fixed(value: str, limit: int | None = None) -> str:
    """The safe form of a stored name: each refused character as its escape, trimmed, NFC,
    cut to its column."""
    text = unicodedata.normalize("NFC", name_safe(value).strip())
    return text[:limit] if limit else text


def _org(obj):
    if obj._meta.label == "orgs.Organization":
        return obj
    return getattr(obj, "org", None)


def _findings(spec, obj):
    """(where, value, safe value) of each name of ``obj``'s ``spec.field`` the rule refuses."""
    value = getattr(obj, spec.field)
    if spec.kind == TEXT:
        if isinstance(value, str) and refused_character(value.strip()):
            limit = obj._meta.get_field(spec.field).max_length
            yield spec.field, value, _fixed(value, limit)
    elif spec.kind == LIST:
        for i, item in enumerate(value if isinstance(value, list) else []):
            if isinstance(item, str) and refused_character(item.strip()):
                yield f"{spec.field}[{i}]", item, _fixed(item)
    elif spec.kind == KEYWORDS:
        keywords = value.get("keywords") if isinstance(value, dict) else None
        for category, words in (keywords if isinstance(keywords, dict) else {}).items():
            for i, word in enumerate(words if isinstance(words, list) else []):
                if isinstance(word, str) and refused_character(word.strip()):
                    yield f"{spec.field}.keywords.{category}[{i}]", word, _fixed(word)


def _rewritten(spec, obj):
    """``obj``'s ``spec.field`` with every refused name in its safe form."""
    value = getattr(obj, spec.field)
    if spec.kind == TEXT:
        return _fixed(value, obj._meta.get_field(spec.field).max_length)

    def safe(item):
        return _fixed(item) if isinstance(item, str) and refused_character(item.strip()) else item

    if spec.kind == LIST:
        return [safe(item) for item in value]
    keywords = {c: [safe(w) for w in words] for c, words in value["keywords"].items()}
    return {**value, "keywords": keywords}


class Command(BaseCommand):
    help = (
        "List every stored name the names rule refuses (saved before the rule: bidi, "
        "zero-width or control characters), with its model, id, field and escaped value. "
        "--fix rewrites each to its safe form (every refused character written as its "
        "escape), audited."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--fix",
            action="store_true",
            help="rewrite the names found to their safe form (audited, via=cli)",
        )

    def handle(self, *args, **opts):
        fix = opts["fix"]
        actor = Actor(via="cli")
        found = fixed = 0
        for spec in NAME_FIELDS:
            model = spec.model_class
            for obj in list(model.objects.order_by("pk")):
                findings = list(_findings(spec, obj))
                if not findings:
                    continue
                for where, value, safe in findings:
                    found += 1
                    char = refused_character(value.strip())
                    line = f"{spec.model} {obj.pk} {where} {shown(value)}: {codepoint(char)}"
                    self.stdout.write(line + (f" -> {shown(safe)}" if fix else ""))
                if fix:
                    problem = self._fix(spec, obj, actor)
                    if problem:
                        self.stderr.write(
                            f"{spec.model} {obj.pk} {spec.field}: not fixed: {problem}"
                        )
                    else:
                        fixed += len(findings)
        if not found:
            self.stdout.write("Every stored name follows the names rule.")
        elif fix:
            self.stdout.write(f"{found} name(s) refused by the rule; {fixed} rewritten.")
        else:
            self.stdout.write(
                f"{found} name(s) refused by the rule. Run with --fix to rewrite them with "
                "each refused character as its escape (a model or provider renamed so is "
                "asked for by its new name)."
            )

    def _fix(self, spec, obj, actor) -> str:
        before = getattr(obj, spec.field)
        after = _rewritten(spec, obj)
        org = _org(obj)
        try:
            with transaction.atomic():
                type(obj).objects.filter(pk=obj.pk).update(**{spec.field: after})
                setattr(obj, spec.field, after)
                audit_record(
                    actor=actor,
                    org=org,
                    action=f"{spec.entity}.update",
                    target=obj,
                    before={spec.field: before},
                    after={spec.field: after},
                )
                if org is not None:
                    config_changed(spec.entity, org, obj)  # the gateways reload the names
        except IntegrityError as exc:  # the safe form is a name the org already has
            return str(exc).splitlines()[0][:200]
        return ""
