"""The mart skip's pure parts (crm/skip.py): what a skipped mart reports, and which settings its fingerprint takes.

The skip itself — real Postgres, real sandbox — is tested in tests/integration/test_crm_load.py ("the mart skip").
"""
from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from ecomsync.config import CrmSettings
from ecomsync.crm import diff, skip
from ecomsync.crm.report import OUTCOMES

MARTS = {mart.table: mart for mart in diff.MARTS}
OPTIONS = diff.DiffOptions(enabled_connections=("a", "b"), full_resync=False, master_list="Master Contact List",
                           master_list_found=True)
ACCOUNT = "http://localhost:8103"

counts_of_a_type = st.fixed_dictionaries({outcome: st.integers(0, 50) for outcome in OUTCOMES})


@st.composite
def phases(draw):
    """A mart, the run's tallies before its phase, and after it (never fewer of anything)."""
    mart = draw(st.sampled_from(diff.MARTS))
    types = st.sampled_from(mart.own_types)
    before = {"counts": draw(st.dictionaries(types, counts_of_a_type)), "malformed": draw(st.integers(0, 5)),
              "skips": draw(st.dictionaries(st.tuples(st.sampled_from(["connection disabled", skip.REJECTED_BEFORE]),
                                                      st.sampled_from(["a", *mart.own_types])), st.integers(1, 9)))}
    phase = draw(st.dictionaries(types, counts_of_a_type))
    malformed = draw(st.integers(0, phase.get(mart.object_type, {}).get("rejected", 0)))
    after = {"counts": {t: {o: before["counts"].get(t, {}).get(o, 0) + phase.get(t, {}).get(o, 0) for o in OUTCOMES}
                        for t in set(before["counts"]) | set(phase)},
             "malformed": before["malformed"] + malformed,
             "skips": {**before["skips"], ("connection disabled", "a"): before["skips"].get(("connection disabled",
                                                                                              "a"), 0) + 1}}
    return mart, before, after, phase, malformed


@given(phases())
def test_a_skipped_mart_reports_every_object_of_its_last_phase_as_a_reread_would(case):  # P4 S4
    mart, before, after, phase, malformed = case

    carried = skip.carried(mart, before, after)

    for object_type, c in phase.items():
        settled = carried["counts"].get(object_type, {"unchanged": 0, "skipped": 0, "rejected": 0})
        # every object the phase decided is counted once more, except the orders it took out of the CRM
        assert sum(settled.values()) == sum(c.values()) - c["removed"]
        assert settled["unchanged"] == c["created"] + c["updated"] + c["unchanged"]
        assert settled["rejected"] == (malformed if object_type == mart.object_type else 0)
    skips = {(reason, scope): n for reason, scope, n in carried["skips"]}
    assert skips.get(("connection disabled", "a")) == 1  # the phase's own skips, not the run's before it
    for object_type, c in phase.items():
        refused = c["rejected"] - (malformed if object_type == mart.object_type else 0)
        assert skips.get((skip.REJECTED_BEFORE, object_type), 0) == refused


SETTINGS = CrmSettings()


@given(st.sampled_from([field.name for field in dataclasses.fields(CrmSettings)]))
def test_every_setting_but_the_pacing_moves_the_fingerprint_of_the_marts_it_decides(name):  # P4 S4
    value = getattr(SETTINGS, name)
    changed = dataclasses.replace(SETTINGS, **{name: value + 1 if isinstance(value, int | float) and not isinstance(
        value, bool) else value.replace(year=2020) if hasattr(value, "year") else f"{value}-2"})
    for mart in diff.MARTS:
        same = skip.options_fingerprint(mart, OPTIONS, SETTINGS, ACCOUNT) == skip.options_fingerprint(
            mart, OPTIONS, changed, ACCOUNT)
        # the master list settings reach the contacts through options.master_list (the name, or None); the
        # pacing ones (the Airflow connection id, the rate) decide no write
        assert same == (name in skip.MASTER_LIST_SETTINGS | skip.PACING_SETTINGS)


def test_the_options_move_the_fingerprint_of_the_marts_that_read_them(monkeypatch):  # P4 S4
    def moved(**changes) -> set[str]:
        options = dataclasses.replace(OPTIONS, **changes)
        return {mart.table for mart in diff.MARTS if skip.options_fingerprint(mart, OPTIONS, SETTINGS, ACCOUNT)
                != skip.options_fingerprint(mart, options, SETTINGS, ACCOUNT)}

    assert moved(enabled_connections=("a",)) == set(MARTS) - {"contacts"}
    assert moved(master_list="Newsletter") == moved(master_list=None) == moved(master_list_found=False) == {
        "contacts"}
    before = {mart.table: skip.options_fingerprint(mart, OPTIONS, SETTINGS, ACCOUNT) for mart in diff.MARTS}
    monkeypatch.setattr(skip.p, "PAYLOAD_VERSION", "2")
    assert all(skip.options_fingerprint(mart, OPTIONS, SETTINGS, ACCOUNT) != before[mart.table]
               for mart in diff.MARTS)
    monkeypatch.undo()
    assert all(skip.options_fingerprint(mart, OPTIONS, SETTINGS, "http://localhost:9999") != before[mart.table]
               for mart in diff.MARTS)
