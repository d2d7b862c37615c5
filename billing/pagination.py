"""Pages of usage rows whose count stops at COUNT_LIMIT: the logs page and the REST logs API.

An exact count reads every matching row: 2-10 s for a tenant with millions of rows in the
range (docs/usage-data.md). Counting at most COUNT_LIMIT + 1 rows (a LIMITed subquery)
costs a few milliseconds whatever the tenant's size, and says either "exactly n" or "more
than COUNT_LIMIT". Pages are still served while rows remain: whether there is a next page
comes from fetching one row more than a page, not from the count.
"""

import math

from django.core.paginator import EmptyPage, Page, Paginator
from django.utils.functional import cached_property
from rest_framework.pagination import PageNumberPagination

COUNT_LIMIT = 10_000
MAX_PAGE = 10**9


class BoundedPage(Page):
    def __init__(self, rows, number, paginator, more: bool):
        super().__init__(rows, number, paginator)
        self.more = more

    def has_next(self) -> bool:
        return self.more

    def next_page_number(self) -> int:
        # From the rows, not the count: a row written since the count may open a next page.
        return self.number + 1


class BoundedPaginator(Paginator):
    """A Paginator whose `count` is exact up to COUNT_LIMIT and COUNT_LIMIT beyond it
    (`count_is_exact` says which); pages past the counted ones are served while rows remain."""

    count_limit = COUNT_LIMIT

    @cached_property
    def _bounded(self) -> tuple[int, bool]:
        # Only the time column: the (org_id, created_at)-led indexes answer it on their own.
        counted = self.object_list.order_by().values("created_at")[: self.count_limit + 1].count()
        return min(counted, self.count_limit), counted <= self.count_limit

    @property
    def count(self) -> int:
        return self._bounded[0]

    @property
    def count_is_exact(self) -> bool:
        return self._bounded[1]

    @cached_property
    def num_pages(self) -> int:
        """The pages counted (all of them when the count is exact)."""
        return max(1, math.ceil(self.count / self.per_page))

    def validate_number(self, number) -> int:
        try:
            return super().validate_number(number)
        except EmptyPage:
            # Past the counted pages there may be rows: any page from 1 up is asked for.
            # (Bounded, so the OFFSET stays a number every database takes.)
            if self.count_is_exact or not 1 <= int(number) <= MAX_PAGE:
                raise
            return int(number)

    def get_page(self, number) -> BoundedPage:
        """The page asked for; a page past the rows is the last page counted, as Django's
        (or the first, if rows went between the count and the page: retention)."""
        try:
            return super().get_page(number)
        except EmptyPage:
            try:
                return self.page(self.num_pages)
            except EmptyPage:
                return self.page(1)

    def page(self, number) -> BoundedPage:
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        rows = list(self.object_list[bottom : bottom + self.per_page + 1])
        if not rows and number > 1:
            raise EmptyPage("That page contains no results")
        return BoundedPage(rows[: self.per_page], number, self, more=len(rows) > self.per_page)


class LogPagination(PageNumberPagination):
    """DRF's page-number pagination with the bounded count: `count` is exact when
    `count_is_exact` is true, and otherwise the rows are more than `count`; `next` links
    go on while rows remain."""

    django_paginator_class = BoundedPaginator

    def get_paginated_response(self, data):
        response = super().get_paginated_response(data)
        paginator = self.page.paginator
        response.data = {
            "count": paginator.count,
            "count_is_exact": paginator.count_is_exact,
            **{k: v for k, v in response.data.items() if k != "count"},
        }
        return response

    def get_paginated_response_schema(self, schema):
        schema = super().get_paginated_response_schema(schema)
        schema["properties"] = {
            "count": schema["properties"]["count"],
            "count_is_exact": {
                "type": "boolean",
                "example": True,
                "description": f"false: the rows are more than `count` ({COUNT_LIMIT:,}, the most counted)",
            },
            **{k: v for k, v in schema["properties"].items() if k != "count"},
        }
        return schema
