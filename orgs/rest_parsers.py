"""The REST API's body parser (settings.REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"]): its own
module, since DRF imports it while its views module is still loading."""

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    """DRF's, but a body nested past Python's recursion limit is a 400 like any other JSON
    it cannot read (DRF turns only ValueError into its ParseError)."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the body is nested too deeply.") from None
