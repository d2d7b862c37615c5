"""What a browser would send back from a dashboard page's form, unchanged (tests that save
a page as it was shown)."""

from html.parser import HTMLParser


class _Form(HTMLParser):
    """What a browser submits from the form holding ``marker`` (an input's name or value):
    text and hidden inputs, checked boxes, the selected options."""

    def __init__(self, marker=None):
        super().__init__()
        self.marker, self.forms, self.select = marker, [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.forms.append({"fields": {}, "marked": False})
        if not self.forms:
            return
        form = self.forms[-1]
        fields = form["fields"]
        if tag in ("input", "select", "textarea") and self.marker in (
            a.get("name"),
            a.get("value"),
        ):
            form["marked"] = True
        if tag == "input" and a.get("name"):
            if a.get("type") == "checkbox":
                if "checked" in a:
                    fields[a["name"]] = a.get("value", "on")
            elif a.get("type") not in ("submit", "button"):
                fields[a["name"]] = a.get("value") or ""
        elif tag == "select":
            self.select = a.get("name")
            fields.setdefault(self.select, None)
        elif tag == "option" and self.select and (fields[self.select] is None or "selected" in a):
            fields[self.select] = a.get("value", "")

    def handle_endtag(self, tag):
        if tag == "select":
            self.select = None

    def submitted(self) -> dict:
        form = next(f for f in self.forms if f["marked"])
        return {k: v for k, v in form["fields"].items() if v is not None}


def form_as_shown(page: str, marker: str = "models") -> dict:
    """The fields of the form on ``page`` that holds ``marker`` (an input's name or value),
    as a browser submits them untouched."""
    parser = _Form(marker)
    parser.feed(page)
    return parser.submitted()
