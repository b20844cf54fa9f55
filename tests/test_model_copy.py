"""ChannelState.copy is written out field by field for speed: it must copy every field there
is, including any added later."""

from __future__ import annotations

import dataclasses

from camwatch.model import ChannelState, State


def test_copy_is_replace_for_every_field() -> None:
    values: dict[str, object] = {
        "channel_id": "41162800001321000001", "state": State.OFFLINE, "reason": "timeout",
        "since": 1.5, "last_probe": 2.5, "last_ok": 0.5, "fails": 3, "oks": 4,
        "latency_ms": 12.0, "clock_drift_s": -7.0, "flapping": True, "detail": "x",
        "info": {"model": "DS-2CD"},
    }
    assert set(values) == {f.name for f in dataclasses.fields(ChannelState)}, \
        "a field was added to ChannelState: give it a value here and copy it in copy()"
    s = ChannelState(**values)  # type: ignore[arg-type]
    for f in dataclasses.fields(ChannelState):  # every value differs from its default
        default = f.default_factory() if callable(f.default_factory) else f.default
        assert values[f.name] != default, f.name
    c = s.copy()
    assert c is not s and c == dataclasses.replace(s)
    assert dataclasses.astuple(c) == dataclasses.astuple(s)
