"""The channel rules as tables of inputs and outputs: the state machine (rules/states.py), the
source precedence (rules/sources.py) and the hosts of the channel book (book.py). Each row is a
boundary a one-line mutation of a rule would move."""

from __future__ import annotations

import pytest

from camwatch.book import HOST_BACKOFF_MAX_S, ChannelBook
from camwatch.config import StatesConfig
from camwatch.inventory import Channel
from camwatch.model import UNJUDGED, ChannelState, Source, State, Verdict, Why
from camwatch.probes.result import ProbeResult, Reason
from camwatch.rules.sources import admits
from camwatch.rules.states import Flaps, apply

OK = Verdict(True)


def fail(reason: str = "timeout") -> Verdict:
    return Verdict(False, reason)


def run(verdicts: list[Verdict], *, fail_threshold: int = 3, recover_threshold: int = 1,
        flap_max_changes: int = 100, start: str = State.ONLINE) -> list[tuple[str, str | None]]:
    policy = StatesConfig(fail_threshold=fail_threshold, recover_threshold=recover_threshold,
                          flap_max_changes=flap_max_changes)
    st = ChannelState("c1", start)
    flaps = Flaps()
    out = []
    for i, v in enumerate(verdicts):
        apply(st, v, float(i), policy, flaps)
        out.append((str(st.state), st.reason))
    return out


@pytest.mark.parametrize(("verdicts", "kw", "last"), [
    # offline exactly at fail_threshold, not one before
    ([fail()] * 2, {}, ("online", None)),
    ([fail()] * 3, {}, ("offline", "timeout")),
    ([fail()] * 1, {"fail_threshold": 1}, ("offline", "timeout")),
    # recover_threshold above 1: one success is not enough
    ([fail()] * 3 + [OK], {"recover_threshold": 2}, ("offline", "timeout")),
    ([fail()] * 3 + [OK, OK], {"recover_threshold": 2}, ("online", None)),
    ([fail()] * 3 + [OK, fail(), OK], {"recover_threshold": 2}, ("offline", "timeout")),
    # the reason follows the latest failure without a transition
    ([fail()] * 3 + [fail("auth")], {}, ("offline", "auth")),
    # a never-judged channel goes online on its first success
    ([OK], {"recover_threshold": 3, "start": "unknown"}, ("online", None)),
    # could not judge: unknown at once, and the counters start again
    ([fail(), fail(), UNJUDGED, fail(), fail()], {}, ("unknown", Why.PROBER_UNHEALTHY)),
    ([fail(), fail(), UNJUDGED, fail(), fail(), fail()], {}, ("offline", "timeout")),
])
def test_state_machine(verdicts: list[Verdict], kw: dict[str, object],
                       last: tuple[str, str | None]) -> None:
    assert run(verdicts, **kw)[-1] == last  # type: ignore[arg-type]


def test_flapping_entry_and_release() -> None:
    # fail_threshold 1 so every flip is a change; more than 4 changes in the window: flapping
    flips = [OK, fail(), OK, fail(), OK, fail(), OK]
    out = run(flips, fail_threshold=1, flap_max_changes=4)
    assert out[4] == ("online", None) and out[5] == ("offline", Why.FLAPPING)
    assert out[6] == ("offline", Why.FLAPPING)  # held: still changing
    policy = StatesConfig(fail_threshold=1, flap_max_changes=4, flap_window="10s")
    st, flaps = ChannelState("c", State.ONLINE), Flaps()
    for i, v in enumerate(flips):
        apply(st, v, float(i), policy, flaps)
    assert st.flapping
    # calm: released only once the window holds at most flap_max_changes // 2 changes
    apply(st, OK, 13.0, policy, flaps)  # changes at 4..6 remain: 3 > 2
    assert st.flapping
    apply(st, OK, 15.0, policy, flaps)  # only the change at 6 remains
    assert not st.flapping and st.state == State.ONLINE


@pytest.mark.parametrize(("source", "seen", "admitted"), [
    (Source.DESCRIBE, {}, True),
    (Source.GB28181, {Source.DESCRIBE: 95.0}, False),  # a fresh deeper verdict wins
    (Source.GB28181, {Source.DESCRIBE: 10.0}, True),  # stale: the platform counts again
    (Source.DESCRIBE, {Source.GB28181: 99.0}, True),  # deeper than what was seen
    (Source.DESCRIBE, {Source.STREAM: 99.0}, False),
    (Source.QUALITY, {Source.STREAM: 99.0, Source.TCP: 99.0}, True),
    (Source.TCP, {Source.GB28181: 99.0}, False),
])
def test_deepest_evidence_wins(source: Source, seen: dict[Source, float],
                               admitted: bool) -> None:
    assert admits(source, seen, 100.0, {s: 60.0 for s in Source}) is admitted


def _book(n: int = 4) -> tuple[ChannelBook, list[Channel]]:
    chs = [Channel(id=f"c{i}", host="nvr", connected=True, installed=True) for i in range(n)]
    book = ChannelBook(StatesConfig(fail_threshold=3), 60.0)
    book.swap({c.id: c for c in chs})
    return book, chs


def _refused() -> Verdict:
    return Verdict.of(ProbeResult.failure("describe", Reason.REFUSED))


def test_host_down_then_backoff_doubles_up_to_its_cap() -> None:
    book, chs = _book()
    t = 0.0
    for c in chs[:3]:  # three connection failures over its channels: the host is down
        book.judge(c.id, _refused(), t)
    host = book.hosts()["nvr"]
    assert host.down and host.backoff == 60.0 and host.next_check == 60.0
    assert book.admit(chs[3], 1.0) is False  # judged without a probe
    assert book.state(chs[3].id) is not None
    backoffs = []
    for _ in range(6):
        t = host.next_check
        assert book.admit(chs[0], t) is True  # the check
        book.judge(chs[0].id, _refused(), t)
        backoffs.append(host.backoff)
    assert backoffs == [120.0, 240.0, 480.0, HOST_BACKOFF_MAX_S, HOST_BACKOFF_MAX_S,
                        HOST_BACKOFF_MAX_S]
    book.judge(chs[0].id, Verdict.of(ProbeResult.success("describe")), t + 1)
    assert not host.down and host.backoff == 0.0


def test_host_down_reason_and_recovery() -> None:
    book, chs = _book()
    for _ in range(3):
        for c in chs:
            book.judge(c.id, _refused(), 0.0)
    assert {book.state(c.id).reason for c in chs} == {Why.HOST_DOWN}  # type: ignore[union-attr]


def test_book_changes_are_kept_until_released() -> None:
    book, chs = _book(1)
    start = book.cursor
    book.judge(chs[0].id, OK, 0.0)
    trans, changed, cursor = book.changes(start)
    assert [t.to_state for t in trans] == ["online"] and changed == {"c0"}
    # not released (the evaluation failed): the same changes again
    assert book.changes(start)[0] == trans
    book.release(cursor)
    assert book.changes(cursor) == ([], set(), cursor)


def test_failed_writes_are_put_back_in_order() -> None:
    book, chs = _book(2)
    book.judge(chs[0].id, OK, 0.0)
    states, trans = book.take_writes()
    book.judge(chs[1].id, OK, 1.0)
    book.restore_writes(states, trans)  # the write of the first batch failed
    states2, trans2 = book.take_writes()
    assert [t.channel_id for t in trans2] == ["c0", "c1"]
    assert {s.channel_id for s in states2} == {"c0", "c1"}


def test_a_change_a_restart_needs_is_written_at_once() -> None:
    """The durable part of a state (state, reason, since, counters up to their thresholds,
    flapping) is written within a second; timestamps alone wait for the full flush."""
    book, chs = _book(1)
    cid = chs[0].id
    for t in range(3):
        book.judge(cid, fail("auth"), float(t))
    book.take_writes()
    book.judge(cid, fail("auth"), 3.0)  # only last_probe moved
    assert book.take_writes()[0] == []
    book.judge(cid, fail("timeout"), 4.0)  # the reason moved: a restart needs it
    assert [s.reason for s in book.take_writes()[0]] == ["timeout"]


def test_flapping_restored_from_the_store_is_released_when_calm() -> None:
    """A channel saved as flapping has no flap history after a restart: calm verdicts release
    it (the history starts afresh), it is not held offline for ever."""
    chs = [Channel(id="c0", host="h", connected=True, installed=True)]
    saved = ChannelState("c0", State.OFFLINE, Why.FLAPPING, since=0.0, oks=1, flapping=True)
    book = ChannelBook(StatesConfig(), 60.0, states={"c0": saved})
    book.swap({c.id: c for c in chs})
    book.judge("c0", OK, 100.0)
    st = book.state("c0")
    assert st is not None and not st.flapping and st.state == State.ONLINE


def test_every_probe_reason_is_a_why_with_a_chinese_name() -> None:
    """``Why`` repeats the probes' closed ``Reason`` set (the probes must not import the
    domain module); a reason added to one and not the other would reach people untranslated."""
    from camwatch.model import REASON_ZH

    assert {r.value for r in Reason} <= {w.value for w in Why}
    assert set(REASON_ZH) == {w.value for w in Why}
    assert all(REASON_ZH[w] and REASON_ZH[w] != w.value for w in Why)
