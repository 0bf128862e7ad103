"""The work loop's store of watched objects: the newest version wins, whichever of a watch
event, a write's answer or a full list brings it; a deleted object never comes back from
an older event; what was seen after a list was made survives the list's answer."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from migweaver.core.operator.object_store import ObjectStore, object_key, version_of

JsonDict = dict[str, Any]


def obj(name: str, version: int | str, note: str = "", namespace: str | None = "ns") -> JsonDict:
    meta: JsonDict = {"name": name, "resourceVersion": str(version)}
    if namespace:
        meta["namespace"] = namespace
    return {"metadata": meta, "note": note}


def notes(store: ObjectStore) -> dict[str, str]:
    return {object_key(o): o["note"] for o in store.items()}


def test_keys_and_versions() -> None:
    assert object_key(obj("a", 1)) == "ns/a"
    assert object_key(obj("gpu", 1, namespace=None)) == "gpu"
    assert version_of(obj("a", 12)) == 12
    assert version_of(obj("a", "opaque")) is None


@pytest.mark.parametrize(
    ("first", "second", "kept"),
    [
        pytest.param(obj("a", 5, "write"), obj("a", 4, "watch"), "write", id="older-event-ignored"),
        pytest.param(obj("a", 5, "write"), obj("a", 5, "watch"), "write", id="same-version-kept"),
        pytest.param(obj("a", 5, "old"), obj("a", 6, "new"), "new", id="newer-event-wins"),
        pytest.param(obj("a", "x", "old"), obj("a", "y", "new"), "new", id="opaque-versions"),
    ],
)
def test_the_newest_version_wins(first: JsonDict, second: JsonDict, kept: str) -> None:
    store = ObjectStore()
    store.replace([], "1")
    store.store(first)
    store.observe("MODIFIED", second)
    assert notes(store) == {"ns/a": kept}


def test_a_deleted_object_is_not_brought_back_by_an_older_answer() -> None:
    # The operator's patch answer (version 7) arrives after the watch told of the deletion
    # (version 8): the pod stays gone.
    store = ObjectStore()
    store.replace([obj("a", 6)], "6")
    store.observe("DELETED", obj("a", 8))
    store.store(obj("a", 7, "late answer"))
    assert notes(store) == {}
    store.observe("ADDED", obj("a", 9, "created again"))
    assert notes(store) == {"ns/a": "created again"}


def test_an_object_missing_from_a_newer_list_is_not_brought_back_by_an_older_event() -> None:
    store = ObjectStore()
    store.replace([], "10")
    store.observe(None, obj("a", 9, "listed by the watch before it was deleted"))
    assert notes(store) == {}
    store.observe("ADDED", obj("b", 11, "new"))
    assert notes(store) == {"ns/b": "new"}


def test_what_was_seen_after_the_list_was_made_survives_its_answer() -> None:
    # The list is answered at version 10; meanwhile the watch delivered version 12 of `a`
    # (a MigLayout turned Ready) and the deletion of `b` at 11: neither is undone.
    store = ObjectStore()
    store.replace([obj("a", 3), obj("b", 4)], "5")
    store.observe("MODIFIED", obj("a", 12, "ready"))
    store.observe("DELETED", obj("b", 11))
    store.replace([obj("a", 9, "listed"), obj("b", 4), obj("c", 10, "listed")], "10")
    assert notes(store) == {"ns/a": "ready", "ns/c": "listed"}


def test_a_list_replaces_what_it_is_newer_than() -> None:
    store = ObjectStore()
    assert not store.synced
    store.replace([obj("a", 3, "old"), obj("b", 4)], "5")
    store.replace([obj("a", 7, "new")], "8")
    assert store.synced
    assert notes(store) == {"ns/a": "new"}


events = st.lists(
    st.tuples(st.sampled_from(["a", "b"]), st.booleans()),  # (name, deleted?)
    min_size=1,
    max_size=12,
)


@given(history=events, seed=st.randoms(use_true_random=False))
def test_any_arrival_order_ends_at_the_newest_state(history: list[Any], seed: Any) -> None:
    """Versions happen in order; the store receives them shuffled (answers and watch events
    race): once it has seen every one, it holds exactly the last state of each object."""
    happened = [
        (obj(name, version, f"v{version}"), deleted)
        for version, (name, deleted) in enumerate(history, start=1)
    ]
    arrivals = list(happened)
    seed.shuffle(arrivals)
    store = ObjectStore()
    store.replace([], "0")
    for body, deleted in arrivals:
        store.observe("DELETED" if deleted else "MODIFIED", body)
    last: dict[str, tuple[JsonDict, bool]] = {}
    for body, deleted in happened:
        last[object_key(body)] = (body, deleted)
    expected = {key: body["note"] for key, (body, deleted) in last.items() if not deleted}
    assert notes(store) == expected


def test_managed_fields_are_not_kept() -> None:
    store = ObjectStore()
    listed = obj("a", 1, "listed")
    listed["metadata"]["managedFields"] = [{"manager": "kubectl", "fieldsV1": {}}]
    store.replace([listed], "1")
    answered = obj("b", 2, "answered")
    answered["metadata"]["managedFields"] = [{"manager": "migweaver"}]
    store.store(answered)
    assert all("managedFields" not in o["metadata"] for o in store.items())
    assert notes(store) == {"ns/a": "listed", "ns/b": "answered"}
    assert "managedFields" in listed["metadata"]  # the caller's object is left alone
