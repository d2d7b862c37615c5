"""The REST API's body parser (settings.REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"]): its own
module, since DRF imports it while its views module is still loading."""

from rest_framework import parsers
from rest_framework.exceptions import ParseError


def _unpaired_surrogate(value) -> str | None:
    """The first string (value or key) in parsed JSON that holds an unpaired UTF-16
    surrogate ("\\ud800" is valid JSON but no Unicode text), or None."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


class JSONParser(parsers.JSONParser):
    """DRF's, but a body nested past Python's recursion limit is a 400 like any other JSON
    it cannot read (DRF turns only ValueError into its ParseError), and so is a body with
    an unpaired surrogate escape: no field could store it, and a message quoting it (an
    invalid choice) could not be written out as UTF-8 (a 500)."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the body is nested too deeply.") from None
        if _unpaired_surrogate(data) is not None:
            raise ParseError(
                "JSON parse error - the body has an unpaired surrogate escape (such as "
                "\\ud800): it is not Unicode text."
            )
        return data
