"""``ursula.loop.Timeouts`` on a ``task.Clock``: a timeout fires at its time or at most one
resolution later, never before; cancelled ones never fire; one reactor timer at a time."""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, task

from ursula.loop import Timeouts


def test_fires_no_earlier_than_asked_and_at_most_one_resolution_later():
    clock = task.Clock()
    t = Timeouts(clock, resolution=0.1)
    fired = []
    t.call_later(1.0, fired.append, "a")
    clock.advance(0.99)
    assert fired == []
    clock.advance(0.11)
    assert fired == ["a"]


def test_cancelled_timeouts_never_fire_and_cancel_is_idempotent():
    clock = task.Clock()
    t = Timeouts(clock, resolution=0.1)
    fired = []
    a = t.call_later(0.5, fired.append, "a")
    t.call_later(0.5, fired.append, "b")
    a.cancel()
    a.cancel()
    assert not a.active()
    clock.advance(1)
    assert fired == ["b"]


def test_many_timeouts_share_one_reactor_timer():
    clock = task.Clock()
    t = Timeouts(clock, resolution=0.1)
    handles = [t.call_later(5.0 + i / 1000, lambda: None) for i in range(500)]
    assert len(clock.getDelayedCalls()) == 1
    for h in handles:
        h.cancel()
    clock.advance(10)
    assert clock.getDelayedCalls() == []


def test_an_earlier_timeout_re_arms_the_timer():
    clock = task.Clock()
    t = Timeouts(clock, resolution=0.1)
    fired = []
    t.call_later(5.0, fired.append, "late")
    t.call_later(0.2, fired.append, "early")
    clock.advance(0.3)
    assert fired == ["early"]
    clock.advance(5)
    assert fired == ["early", "late"]


def test_a_callback_may_arm_another_and_a_failing_one_does_not_stop_the_rest():
    clock = task.Clock()
    t = Timeouts(clock, resolution=0.1)
    fired = []

    def boom():
        raise RuntimeError("boom")

    t.call_later(0.1, boom)
    t.call_later(0.1, lambda: t.call_later(0.5, fired.append, "again"))
    clock.advance(0.2)
    clock.advance(0.6)
    assert fired == ["again"]


def test_deadline_cancels_a_deferred_that_did_not_fire_and_disarms_one_that_did():
    clock = task.Clock()
    t = Timeouts(clock, resolution=0.1)
    slow, fast = defer.Deferred(), defer.Deferred()
    failures = []
    t.deadline(slow, 1.0).addErrback(failures.append)
    t.deadline(fast, 1.0)
    fast.callback("ok")
    assert len(t) == 1  # fast's timeout is gone already
    clock.advance(1.2)
    assert failures and failures[0].check(defer.CancelledError)
    assert fast.result == "ok"


def test_stop_drops_everything():
    clock = task.Clock()
    t = Timeouts(clock)
    fired = []
    t.call_later(1, fired.append, 1)
    t.stop()
    clock.advance(2)
    assert fired == [] and clock.getDelayedCalls() == []


@settings(max_examples=60, deadline=None)
@given(delays=st.lists(st.floats(min_value=0, max_value=3), min_size=1, max_size=30),
       cancel=st.lists(st.booleans(), min_size=30, max_size=30),
       step=st.floats(min_value=0.01, max_value=0.7))
def test_property_every_live_timeout_fires_once_within_its_window(delays, cancel, step):
    clock = task.Clock()
    t = Timeouts(clock, resolution=0.1)
    fired: dict[int, float] = {}
    handles = []
    for i, delay in enumerate(delays):
        handles.append(t.call_later(delay, lambda i=i: fired.setdefault(i, clock.seconds())
                                    if i not in fired else fired.__setitem__(i, -1)))
    for i, h in enumerate(handles):
        if cancel[i]:
            h.cancel()
    while clock.seconds() < 4:
        clock.advance(step)
    for i, delay in enumerate(delays):
        if cancel[i]:
            assert i not in fired
        else:
            assert fired[i] >= delay - 1e-9  # never early (and -1 would mean twice)
            assert fired[i] <= delay + 0.1 + step + 1e-9
