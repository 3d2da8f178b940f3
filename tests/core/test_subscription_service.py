"""``SubscriptionService`` and ``WebhookSender`` on fakes: a ``task.Clock``, a real
``StreamMachine`` behind a fake core (submit applies at the clock's time), and a fake webhook
POST. Checks signed deliveries, ``{"done": true}`` auto-acks, retries with back-off, lease
expiry (a new generation is delivered: at-least-once), pull-wake events, and that a new leader
(a service on a restored snapshot) honours the retry schedule it inherits."""

from __future__ import annotations

import json
import random

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from twisted.internet import defer, task

from ursula.core.subscriptions import SubscriptionService, SubscriptionSettings
from ursula.core.webhooks import AddressRefused, AnswerTooLarge, WebhookSender
from ursula.stream import StreamMachine
from ursula.stream import commands as C
from ursula.stream.machine import StreamError
from ursula.stream.subscriptions import config_hash, key_command, sub_command
from ursula.subscriptions.signing import KeyStore, Signer, TokenError, unb64url

B = "_default"


class FakeGroup:
    def __init__(self, machine):
        self.machine = machine
        self.is_leader = True


class FakeRaft:
    def __init__(self, machine):
        self.groups = {0: FakeGroup(machine)}
        self.group_count = 1
        self.subscription_hooks = []


class FakeCore:
    """One group on a clock: ``submit`` applies at once (and tells the hooks, as RaftCore)."""

    def __init__(self, clock):
        self.clock = clock
        self.machine = StreamMachine()
        self.raft = FakeRaft(self.machine)
        self.submitted = []

    def now(self):
        return int(self.clock.seconds() * 1000)

    def submit(self, command):
        self.submitted.append(command)
        outcome = self.machine.apply(command, self.now())
        if isinstance(command, (C.CreateStream, C.Append)) and outcome.error is None:
            for hook in self.raft.subscription_hooks:
                hook.stream_changed((command.bucket, command.stream))
        for hook in self.raft.subscription_hooks:
            hook.group_applied(self.raft.groups[0])
        return defer.succeed(outcome)

    def head(self, bucket, name):
        try:
            return defer.succeed(self.machine.head(bucket, name, self.now()))
        except StreamError as error:
            return defer.fail(error)

    def list_streams(self, bucket, after, limit):
        return defer.succeed(self.machine.list_streams(bucket, after, limit, self.now()))


class FakePost:
    """Answers each POST with the next scripted (status, body); records the requests."""

    def __init__(self):
        self.requests = []
        self.answers = []
        self.hang = False

    def __call__(self, url, body, headers):
        self.requests.append((url, body, headers))
        if self.hang:
            return defer.Deferred()
        status, answer = self.answers.pop(0) if self.answers else (200, b"{}")
        return defer.succeed(FakeResponse(status, answer))


class FakeResponse:
    def __init__(self, code, body):
        self.code = code
        self.body = body

    def deliverBody(self, protocol):
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        class T:
            def stopProducing(self):
                pass
        protocol.transport = T()
        for i in range(0, len(self.body), 7):
            protocol.dataReceived(self.body[i:i + 7])
        protocol.connectionLost(Failure(ConnectionDone()))


def webhook_config(ttl=1000):
    return {"type": "webhook", "pattern": "events/*", "streams": [],
            "webhook": {"url": "http://127.0.0.1:9/hook"}, "wake_stream": None,
            "lease_ttl_ms": ttl, "description": None}


@pytest.fixture
def rig():
    clock = task.Clock()
    clock.advance(1000)
    core = FakeCore(clock)
    post = FakePost()
    sender = WebhookSender(clock, timeout_s=5, max_answer_bytes=1024, post=post)
    keys = KeyStore(core, key_command, random_bytes=lambda n: b"k" * n)
    service = SubscriptionService(clock, core.raft, core, keys, sender,
                                  SubscriptionSettings(tick_ms=100, reconcile_ms=10_000),
                                  rng=random.Random(1))
    service.start()
    return clock, core, post, service


def create(core, sub_id="s", cfg=None):
    cfg = cfg or webhook_config()
    return core.submit(sub_command(B, sub_id, "put", config=cfg, hash=config_hash(cfg),
                                   base_url="http://node/v1/stream", links=[]))


def run(clock, seconds, step=0.05):
    for _ in range(int(seconds / step)):
        clock.advance(step)


def test_an_append_is_delivered_signed_and_done_acks_it(rig):
    clock, core, post, service = rig
    create(core)
    post.answers.append((200, b'{"done": true}'))
    core.submit(C.CreateStream(B, "events/a", content_type="text/plain", body=b"hello"))
    run(clock, 0.5)
    assert len(post.requests) == 1
    url, body, headers = post.requests[0]
    assert url == "http://127.0.0.1:9/hook"
    sig = dict(part.split("=", 1) for part in headers["Webhook-Signature"][0].split(","))
    signer = Signer(b"k" * 32)
    assert sig["kid"] == signer.kid
    Ed25519PublicKey.from_public_bytes(unb64url(signer.x)).verify(
        unb64url(sig["ed25519"]), sig["t"].encode() + b"." + body)  # raises if forged
    payload = json.loads(body)
    assert payload["callback_url"] == "http://node/v1/stream/__ds/subscriptions/s/callback"
    assert payload["streams"] == [{"path": "events/a", "link_type": "glob", "acked_offset": "-1",
                                   "tail_offset": "0000000000000000_0000000000000005",
                                   "has_pending": True}]
    claims = signer.check_token(payload["callback_token"], B, "s", core.now())
    assert claims["g"] == payload["generation"] == 1
    with pytest.raises(TokenError):
        signer.check_token(payload["callback_token"], B, "other", core.now())
    sub = core.machine.subscriptions.get(B, "s")
    assert sub.links["events/a"].acked == 5 and sub.wake is None
    assert service.stats()["deliveries"] == 1
    run(clock, 1)
    assert len(post.requests) == 1  # nothing pending: no more wakes


def test_failures_are_retried_with_back_off_and_the_schedule_survives_a_new_leader(rig):
    clock, core, post, service = rig
    create(core)
    post.answers.extend([(500, b"")] * 3)
    core.submit(C.CreateStream(B, "events/a", content_type="text/plain", body=b"x"))
    run(clock, 0.2)
    assert len(post.requests) == 1
    sent_at = [clock.seconds()]
    while len(post.requests) < 3:
        clock.advance(0.05)
        if len(post.requests) > len(sent_at):
            sent_at.append(clock.seconds())
    gaps = [b - a for a, b in zip(sent_at, sent_at[1:], strict=False)]
    assert 0.75 <= gaps[0] <= 1.35 and 1.55 <= gaps[1] <= 2.5  # 1 s, then 2 s, ±20 %
    sub = core.machine.subscriptions.get(B, "s")
    assert sub.wake.attempts == 3 and sub.view()["status"] == "failed"
    assert service.stats()["retry_queue"] == 1 and service.stats()["failures"] == 3
    due = sub.wake.next_attempt_ms
    # the leader dies; a new one restores the replicated state and honours the schedule
    service.stop()
    core.raft.groups[0].is_leader = False
    clock2 = task.Clock()
    clock2.advance(clock.seconds())
    core2 = FakeCore(clock2)
    core2.machine = StreamMachine.restore(core.machine.snapshot())
    core2.raft = FakeRaft(core2.machine)
    post2 = FakePost()
    post2.answers.append((200, b'{"done":true}'))
    service2 = SubscriptionService(clock2, core2.raft, core2,
                                   KeyStore(core2, key_command, lambda n: b"k" * n),
                                   WebhookSender(clock2, 5, 1024, post=post2),
                                   SubscriptionSettings(tick_ms=100), random.Random(2))
    service2.start()
    while clock2.seconds() * 1000 < due - 60:
        clock2.advance(0.05)
        assert not post2.requests  # not before the replicated next_attempt_at
    run(clock2, 0.3)
    assert len(post2.requests) == 1
    assert json.loads(post2.requests[0][1])["wake_id"] == sub.wake.wake_id  # the same wake
    assert core2.machine.subscriptions.get(B, "s").links["events/a"].acked == 1


def test_an_expired_lease_wakes_again_with_a_new_generation(rig):
    clock, core, post, service = rig
    create(core)
    core.submit(C.CreateStream(B, "events/a", content_type="text/plain", body=b"x"))
    run(clock, 0.3)  # answered 200 {} : the lease runs, nobody calls back
    assert len(post.requests) == 1
    assert service.stats()["active_leases"] == 1
    run(clock, 1.2)
    assert len(post.requests) == 2
    first, second = (json.loads(r[1]) for r in post.requests)
    assert second["generation"] == first["generation"] + 1
    assert second["wake_id"] != first["wake_id"]


def test_a_hung_receiver_times_out_and_is_retried(rig):
    clock, core, post, service = rig
    post.hang = True
    create(core)
    core.submit(C.CreateStream(B, "events/a", content_type="text/plain", body=b"x"))
    run(clock, 0.3)
    assert len(post.requests) == 1 and service.sender.in_flight == 1
    run(clock, 5.0)
    assert service.sender.in_flight == 0
    assert core.machine.subscriptions.get(B, "s").wake.attempts == 1


def test_pull_wake_appends_a_wake_event():
    clock = task.Clock()
    core = FakeCore(clock)
    service = SubscriptionService(clock, core.raft, core,
                                  KeyStore(core, key_command, lambda n: b"k" * n),
                                  WebhookSender(clock, 5, 1024, post=FakePost()),
                                  SubscriptionSettings(tick_ms=100))
    service.start()
    core.submit(C.CreateStream(B, "wake/pool", content_type="application/json"))
    cfg = {"type": "pull-wake", "pattern": "events/*", "streams": [], "webhook": None,
           "wake_stream": "wake/pool", "lease_ttl_ms": 1000, "description": None}
    create(core, "p", cfg)
    core.submit(C.CreateStream(B, "events/a", content_type="text/plain", body=b"x"))
    run(clock, 0.5)
    data = core.machine.read(B, "wake/pool", 0, 1 << 20, core.now()).data
    events = json.loads(b"[" + data.rstrip(b",") + b"]")
    assert [(e["type"], e["subscription_id"], e["stream"], e["generation"]) for e in events] \
        == [("wake", "p", "events/a", 1)]
    assert service.stats()["wake_events"] == 1


def test_the_sender_bounds_the_answer():
    clock = task.Clock()
    post = FakePost()
    post.answers.append((200, b"x" * 5000))
    sender = WebhookSender(clock, timeout_s=1, max_answer_bytes=100, post=post)
    failures = []
    sender.deliver("http://h/", b"{}", {}).addErrback(failures.append)
    assert failures and failures[0].check(AnswerTooLarge)
    post.answers.append((204, b""))
    results = []
    sender.deliver("http://h/", b"{}", {}).addCallback(results.append)
    assert results == [(204, b"")]


def test_the_sender_checks_what_a_name_resolves_to_before_each_post():
    clock = task.Clock()
    post = FakePost()
    answers = {"hooks.example.com": "93.184.216.34", "evil.example.com": "10.1.2.3",
               "meta.example.com": "169.254.169.254"}
    sender = WebhookSender(clock, 1, 100, post=post,
                           resolve=lambda host: defer.succeed(answers[host]))
    outcomes = []
    for host in answers:
        sender.deliver(f"https://{host}/h", b"{}", {}).addBoth(outcomes.append)
    assert outcomes[0] == (200, b"{}")
    assert [o.check(AddressRefused) for o in outcomes[1:]] == [AddressRefused] * 2
    assert [r[0] for r in post.requests] == ["https://hooks.example.com/h"]
    strict = WebhookSender(clock, 1, 100, post=post, allow_loopback=False)
    failed = []
    strict.deliver("http://127.0.0.1:9/h", b"{}", {}).addErrback(failed.append)
    assert failed and failed[0].check(AddressRefused)
