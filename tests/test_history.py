"""Mirror history records (issue 13): merged by union whatever the order, kept through the ledger's JSON."""

from __future__ import annotations

from functools import reduce

from hypothesis import given
from hypothesis import strategies as st

from ocicopy.digest import Digest
from ocicopy.history import MAX_PREVIOUS, TagRecord, decode_tags, encode_tags, merge
from ocicopy.ledger import LedgerDoc

DIGESTS = st.integers(0, 6).map(lambda i: Digest(f"sha256:{i:064x}"))
DEPLOYMENTS = st.sampled_from(["eu/api/prod", "eu/web/prod", "us/api/prod", "us/api/dev"])


def records(tag: str = "t1") -> st.SearchStrategy[TagRecord]:
    return st.builds(
        lambda digest, written, deployments, previous: TagRecord(
            "m/api", tag, digest, float(written), frozenset(deployments), tuple(sorted(set(previous) - {digest}))
        ),
        DIGESTS,
        st.integers(1_700_000_000, 1_700_000_100),
        st.sets(DEPLOYMENTS, max_size=3),
        st.lists(DIGESTS, max_size=3, unique=True),
    )


@given(st.lists(records(), min_size=1, max_size=6), st.randoms())
def test_merging_records_of_one_tag_does_not_depend_on_the_order(batch: list[TagRecord], rnd: object) -> None:
    shuffled = list(batch)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    one, other = reduce(merge, batch), reduce(merge, shuffled)
    assert one == other
    assert merge(one, one) == one
    newest = max(batch, key=lambda r: (r.written, r.digest))
    assert one.digest == newest.digest and one.written == newest.written
    assert one.deployments == frozenset().union(*(r.deployments for r in batch))
    earlier = {r.digest for r in batch} | {d for r in batch for d in r.previous}
    assert set(one.previous) == earlier - {one.digest} and one.digest not in one.previous
    assert len(one.previous) <= MAX_PREVIOUS


@given(st.lists(st.one_of(records("t1"), records("t2"), records("v-3")), max_size=8))
def test_records_survive_the_ledger_document(batch: list[TagRecord]) -> None:
    doc = LedgerDoc()
    for r in batch:
        doc.record_tag(r)
    again = LedgerDoc.decode(doc.encode())
    assert again.tags == doc.tags
    assert {r.repository for r in batch} <= again.repositories


def test_untrusted_entries_are_dropped() -> None:
    good = {"digest": "sha256:" + "a" * 64, "written": "2026-12-02T10:00:00Z", "deployments": ["eu/api/prod"]}
    section = {
        "m/api:v1": good,
        "m/api:bad tag": good,  # not a tag
        "M/API:v1": good,  # not a repository
        "m/api:v2": {**good, "digest": "sha256:zz"},
        "m/api:v3": {**good, "written": "yesterday"},
        "m/api:v4": {**good, "previous": ["sha256:" + "a" * 64, "nope", "sha256:" + "b" * 64]},
        "m/api:v5": "not an object",
    }
    tags = decode_tags(section)
    assert set(tags) == {"m/api:v1", "m/api:v4"}
    assert tags["m/api:v4"].previous == (Digest("sha256:" + "b" * 64),)  # its own digest and junk left out
    assert encode_tags(tags.values())["m/api:v1"] == good
