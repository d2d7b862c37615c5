"""`logs --follow --policy`: the live tail pushes every row of the org, and the CLI keeps
the smart-routed rows of the named policy (the org default's rows record the name "")."""

from bonito_cli.follow import matches

ROW = {"model_requested": "auto", "model_used": "m", "status": "success", "key_id": 3}


def test_a_policy_keeps_its_smart_routed_rows_only():
    saver = {**ROW, "routing_policy": "saver", "route_tier": "m"}
    default = {**ROW, "routing_policy": "", "route_tier": "m"}
    plain = {**ROW, "routing_policy": "", "route_tier": ""}  # not smart-routed
    unknown = dict(ROW)  # an older server's row: no policy fields
    assert [matches(r, {"policy_name": "saver"}) for r in (saver, default, plain, unknown)] == [
        True,
        False,
        False,
        False,
    ]
    assert [matches(r, {"policy_name": ""}) for r in (saver, default, plain, unknown)] == [
        False,
        True,
        False,
        False,
    ]
    # without --policy, all of them; with other filters too, all must hold
    assert all(matches(r, {}) for r in (saver, default, plain, unknown))
    assert not matches(saver, {"policy_name": "saver", "key": "4"})
    assert matches(saver, {"policy_name": "saver", "key": "3"})
