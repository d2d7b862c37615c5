"""Small text helpers shared by forms, views and commands."""


def split_csv(value: str | None) -> list[str]:
    """'a, b,,c ' -> ['a', 'b', 'c']: how list fields are typed in forms and on the command line."""
    return [v.strip() for v in (value or "").split(",") if v.strip()]
