"""The snapshot's key table (base dict + overlay) behaves exactly like a dict through any
sequence of deltas, across compactions, and never changes a table already published."""

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.dataplane.snapshot import KeyTable


class SmallTable(KeyTable):
    __slots__ = ()
    COMPACT_MIN = 3  # compacts every few changes, so the fold itself is exercised
    COMPACT_RATIO = 2


hashes = st.sampled_from([f"h{i}" for i in range(12)])
steps = st.lists(
    st.tuples(st.dictionaries(hashes, st.integers(), max_size=4), st.lists(hashes, max_size=4)),
    max_size=25,
)


def check(table, model):
    assert len(table) == len(model)
    assert dict(table.items()) == model
    assert sorted(table) == sorted(model)
    assert table == model
    for h in [f"h{i}" for i in range(12)]:
        assert (h in table) == (h in model)
        assert table.get(h) == model.get(h)
        assert table.get(h, "absent") == model.get(h, "absent")


@settings(max_examples=300, deadline=None)
@given(
    start=st.dictionaries(hashes, st.integers(), max_size=8),
    steps=steps,
    cls=st.sampled_from([KeyTable, SmallTable]),
)
def test_a_key_table_is_a_dict_through_any_changes(start, steps, cls):
    table, model = cls(dict(start)), dict(start)
    history = [(table, dict(model))]
    for sets, removed in steps:
        removed = [h for h in removed if h not in sets]
        table = table.changed(sets, removed)
        for h in removed:
            model.pop(h, None)
        model.update(sets)
        check(table, model)
        history.append((table, dict(model)))
    for old, seen in history:  # published tables are never changed by later deltas
        check(old, seen)


def test_lookups_of_a_missing_key_raise_key_error():
    table = KeyTable({"a": 1}).changed({}, ["a"])
    assert "a" not in table and table.get("a") is None
    try:
        table["a"]
    except KeyError:
        pass
    else:
        raise AssertionError("a removed key was found")
