"""Every CSV download goes through here: cells a spreadsheet would run are neutralised.

A cell that starts with = + - @ (or a tab, CR or LF) is a formula to Excel, LibreOffice
and Google Sheets (`=HYPERLINK(...)`, `@SUM(...)`, DDE), so a key, team or model name typed
by one user could run in another user's spreadsheet. OWASP's rule: prefix such a cell with
a single quote, which the spreadsheet shows as text. Only text cells are prefixed: numbers
we computed (ints, Decimals) are data, so a negative number stays a number. Decimals are
written in plain notation (0.00000000, never 0E-8)."""

import csv
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from itertools import islice

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import StreamingHttpResponse

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")


def csv_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, float):
        return format(Decimal(repr(value)), "f")
    if isinstance(value, datetime):
        return value.isoformat()
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


class _Echo:
    def write(self, value):
        return value


# Lines per hop to the thread the database is read in, when served over ASGI.
LINES_PER_CHUNK = 500


def csv_response(*, filename: str, header: list[str], rows: Iterable[Iterable], request=None):
    """A streamed text/csv attachment; ``rows`` is consumed lazily, one line at a time.

    Under ASGI (pass the ``request``) the body is an async iterator that reads each chunk of
    lines in the request's thread (where its database connection is): a sync iterator there
    made Django warn and consume it in a thread of its own."""
    writer = csv.writer(_Echo())

    def lines():
        yield writer.writerow([csv_cell(h) for h in header])
        for row in rows:
            yield writer.writerow([csv_cell(v) for v in row])

    body = _chunks_async(lines()) if isinstance(request, ASGIRequest) else lines()
    response = StreamingHttpResponse(body, content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


async def _chunks_async(lines):
    take = sync_to_async(lambda: "".join(islice(lines, LINES_PER_CHUNK)), thread_sensitive=True)
    while chunk := await take():
        yield chunk
