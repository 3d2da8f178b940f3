"""``SubscriptionService``: the runtime side of subscriptions in one core process. It acts only
for the subscriptions of groups this core *leads*; every decision it takes is proposed as a
``Subscription`` command (``ursula.stream.subscriptions`` applies it on every replica), so when
the leader dies its successor's service finds the same wakes, generations, leases and retry
schedules and carries on (at-least-once: a delivery in flight at the crash is sent again).

What it does, per led subscription:

* **learns tails**: ``stream_changed(key)`` is called for every stream change applied on this
  core (``RaftCore.notify``) and, with ``[node] cores`` > 1, for every change applied on the
  node's other cores (their ``CoreWatchers`` send every changed key to a core that asked with
  ``sub_watch_all``). Every node holds a replica of every group, so the node leading a
  subscription's group sees every append, wherever that stream's group is led. A changed
  stream that is linked or matches the pattern is ``head``-ed (the linearizable barrier) and
  its tail proposed (``tails``), coalesced: one ``tails`` in flight per subscription.
  **Reconciliation** every ``reconcile_ms`` (and at once when this core gains a group's
  leadership) lists the bucket's streams under the pattern's literal prefix and heads the
  explicit links, so a change whose notice was lost (a crash between an append and its
  ``tails``) is still found: nothing is skipped, only delayed.
* **wakes**: pending work and no wake in flight -> ``wake`` (fenced by the generation).
* **delivers**: a webhook POST signed with the cluster's Ed25519 key (``IWebhookSender``),
  answered 2xx -> ``delivered`` (``{"done": true}`` acks the wake's snapshot), otherwise a retry
  at ``next_attempt_ms`` (1 s doubling to ``retry_max_ms``, ±20 % jitter) carried in the
  replicated state; a pull-wake subscription appends a wake event to its ``wake_stream``.
* **leases**: a lease past its end -> ``expire`` (the state then has no wake; a new one follows
  if work is pending).

The tick (``tick_ms``) re-evaluates every led subscription, so a proposal lost to a leadership
change is simply made again.

May import: Twisted, ``ursula.stream``, ``ursula.protocol``, ``ursula.subscriptions`` and
``ursula.core``.
"""

from __future__ import annotations

import json
import random
from urllib.parse import quote

from twisted.internet import defer, task
from twisted.logger import Logger

from ursula.core.placement import group_of
from ursula.protocol.offsets import render_offset
from ursula.stream import commands as C
from ursula.stream.machine import StreamError
from ursula.stream.subscriptions import retry_delay_ms, sub_command, sub_key
from ursula.subscriptions.listing import list_matching

log = Logger()


def render_ack(offset: int) -> str:
    return "-1" if offset < 0 else render_offset(offset)


class SubscriptionSettings:
    def __init__(self, tick_ms=200, reconcile_ms=5000, retry_initial_ms=1000,
                 retry_max_ms=60_000, token_ttl_ms=3_600_000, max_list_streams=1000,
                 reconcile_max_streams=100_000):
        self.tick_ms = tick_ms
        self.reconcile_ms = reconcile_ms
        self.retry_initial_ms = retry_initial_ms
        self.retry_max_ms = retry_max_ms
        self.token_ttl_ms = token_ttl_ms
        self.max_list_streams = max_list_streams
        self.reconcile_max_streams = reconcile_max_streams


class SubscriptionService:
    def __init__(self, reactor, raft, core, keys, sender, settings=None, rng=None):
        self.reactor = reactor
        self.raft = raft  # this core's RaftCore (its groups, who leads them)
        self.core = core  # the ICore (reaches streams of every core and node)
        self.keys = keys  # ursula.subscriptions.signing.KeyStore
        self.sender = sender  # IWebhookSender
        self.settings = settings or SubscriptionSettings()
        self.rng = rng or random.Random()
        self.proxies = getattr(core, "proxies", {})
        self._proposing: set = set()
        self._sending: set = set()
        self._tails_busy: set = set()
        self._dirty: dict[tuple[str, str], set[str]] = {}
        self._flush_armed = False
        self._kick_armed = False
        self._led: set[int] = set()
        self._next_reconcile = 0
        self._known: set = set()  # led subscriptions seen (a new one is reconciled soon)
        self._watching_all = False  # the other cores send us every change
        self._loop = None
        self.counts = {"deliveries": 0, "failures": 0, "wake_events": 0}
        raft.subscription_hooks.append(self)
        for proxy in self.proxies.values():
            proxy.change_listeners.append(self.streams_changed)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = task.LoopingCall(self.tick)
        self._loop.clock = self.reactor
        self._loop.start(self.settings.tick_ms / 1000.0, now=False)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def now_ms(self) -> int:
        return int(self.reactor.seconds() * 1000)

    # -- what this core leads ----------------------------------------------------------------

    def led_subs(self):
        for group in self.raft.groups.values():
            if group.is_leader:
                yield from list(group.machine.subscriptions.subs.values())

    def stats(self) -> dict:
        retrying = leases = subs = 0
        now = self.now_ms()
        for sub in self.led_subs():
            subs += 1
            wake = sub.wake
            if wake is None:
                continue
            if wake.attempts and not wake.delivered:
                retrying += 1
            if wake.lease_until is not None and wake.lease_until > now:
                leases += 1
        return dict(self.counts, subscriptions=subs, retry_queue=retrying, active_leases=leases,
                    in_flight=self.sender.in_flight if hasattr(self.sender, "in_flight") else 0)

    # -- hooks (RaftCore, RemoteCoreProxy) ------------------------------------------------------

    def stream_changed(self, key) -> None:
        self.streams_changed((key,))

    def streams_changed(self, keys) -> None:
        if not self._known:
            return  # no subscription led here: the append path pays nothing more
        subs = None
        for bucket, name in keys:
            if name.startswith("__ds/"):
                continue
            if subs is None:
                subs = list(self.led_subs())
                if not subs:
                    return
            for sub in subs:
                if sub.bucket == bucket and (name in sub.links or sub.matches(name)):
                    self._dirty.setdefault((sub.bucket, sub.id), set()).add(name)
        if self._dirty and not self._flush_armed:
            self._flush_armed = True
            self.reactor.callLater(0, self._flush_dirty)

    def group_applied(self, group) -> None:
        if group.is_leader and len(group.machine.subscriptions):
            self.kick()

    def kick(self) -> None:
        if not self._kick_armed:
            self._kick_armed = True
            self.reactor.callLater(0, self._kicked)

    def _kicked(self) -> None:
        self._kick_armed = False
        self.evaluate_all()

    # -- the tick -----------------------------------------------------------------------------

    def tick(self) -> None:
        now = self.now_ms()
        led = {g for g, group in self.raft.groups.items() if group.is_leader}
        gained = led - self._led
        self._led = led
        if now >= self._next_reconcile:
            self._next_reconcile = now + self.settings.reconcile_ms
            self._watch_all(bool(self._known), renew=True)
            for sub in self.led_subs():
                self.reconcile(sub)
        elif gained:
            for g in gained:
                for sub in list(self.raft.groups[g].machine.subscriptions.subs.values()):
                    self.reconcile(sub)
        self.evaluate_all()

    def _watch_all(self, wanted: bool, renew: bool = False) -> None:
        """Ask the node's other cores for every change while this core leads a subscription
        (renewed every ``reconcile_ms``: a restarted core has forgotten it)."""
        if wanted == self._watching_all and not (renew and wanted):
            return
        self._watching_all = wanted
        op = "sub_watch_all" if wanted else "sub_unwatch_all"
        for proxy in self.proxies.values():
            proxy.call(op).addErrback(lambda _: None)

    def evaluate_all(self) -> None:
        now = self.now_ms()
        led = list(self.led_subs())
        known = {(sub.bucket, sub.id) for sub in led}
        for sub in led:
            if (sub.bucket, sub.id) not in self._known:
                # new here (created, or leadership gained): its first notices may have raced
                # the watch of the other cores; look again shortly
                self.reactor.callLater(0.3, self._reconcile_key, (sub.bucket, sub.id))
        self._known = known
        self._watch_all(bool(known))
        for sub in led:
            try:
                self.evaluate(sub, now)
            except Exception:  # noqa: BLE001 - one subscription must not stop the others
                log.failure("subscription {id}: evaluation failed", id=sub.id)

    def evaluate(self, sub, now: int) -> None:
        key = (sub.bucket, sub.id)
        wake = sub.wake
        if key in self._proposing:
            return
        if wake is None:
            if sub.pending():
                self._propose(key, sub_command(sub.bucket, sub.id, "wake",
                                               generation=sub.generation,
                                               wake_id=self.new_wake_id()))
            return
        if wake.lease_until is not None and wake.lease_until <= now:
            self._propose(key, sub_command(sub.bucket, sub.id, "expire",
                                           wake_id=wake.wake_id))
            return
        if not wake.delivered and key not in self._sending and now >= wake.next_attempt_ms:
            self._sending.add(key)
            if sub.type == "webhook":
                d = self._send_webhook(sub, wake, now)
            else:
                d = self._write_wake_event(sub, wake, now)
            d.addErrback(lambda f: log.failure("subscription {id}: delivery", f, id=sub.id))
            d.addBoth(lambda _: self._sending.discard(key))

    def _reconcile_key(self, key) -> None:
        sub = self._sub(key)
        group = self.raft.groups.get(self._group_of(key))
        if sub is not None and group is not None and group.is_leader:
            self.reconcile(sub)

    def new_wake_id(self) -> str:
        return f"w_{self.rng.getrandbits(128):032x}"

    def _propose(self, key, command) -> defer.Deferred:
        self._proposing.add(key)
        d = defer.maybeDeferred(self.core.submit, command)

        def done(result):
            self._proposing.discard(key)
            self.kick()
            return result
        d.addBoth(done)
        d.addErrback(lambda f: log.debug("subscription {key}: {op} not applied ({why})",
                                         key=key, op=command.op, why=f.getErrorMessage()))
        return d

    # -- delivery --------------------------------------------------------------------------

    def retry_at(self, attempts: int, now: int) -> int:
        s = self.settings
        return now + retry_delay_ms(attempts + 1, self.rng.random(), s.retry_initial_ms,
                                    s.retry_max_ms)

    def webhook_body(self, sub, wake, signer, now: int) -> bytes:
        streams = [{"path": s["path"], "link_type": s["link_type"],
                    "acked_offset": render_ack(s["acked"]),
                    "tail_offset": render_offset(s["tail"]), "has_pending": s["has_pending"]}
                   for s in sub.stream_infos(wake.snapshot)]
        base = sub.base_url.rstrip("/")
        token = signer.make_token(sub.bucket, sub.id, wake.generation, wake.wake_id,
                                  now + self.settings.token_ttl_ms)
        return json.dumps({
            "subscription_id": sub.id, "wake_id": wake.wake_id, "generation": wake.generation,
            "streams": streams,
            "callback_url": f"{base}/__ds/subscriptions/{quote(sub.id, safe='')}/callback",
            "callback_token": token}, separators=(",", ":")).encode()

    def _send_webhook(self, sub, wake, now: int) -> defer.Deferred:
        key = (sub.bucket, sub.id)
        url = sub.config["webhook"]["url"]
        attempts = wake.attempts

        def send(signer):
            body = self.webhook_body(sub, wake, signer, now)
            t = int(self.reactor.seconds())
            headers = {"Content-Type": ["application/json"],
                       "Webhook-Signature": [signer.signature_header(body, t)],
                       "User-Agent": ["ursula-webhooks"]}
            return self.sender.deliver(url, body, headers)

        def answered(result):
            status, data = result
            ok = 200 <= status < 300
            done = False
            if ok:
                try:
                    parsed = json.loads(data) if data else None
                    done = isinstance(parsed, dict) and parsed.get("done") is True
                except ValueError:
                    done = False
            return ok, done

        def failed(failure):
            log.info("subscription {id}: webhook to {url} failed: {why}", id=sub.id, url=url,
                     why=failure.getErrorMessage())
            return False, False

        def record(result):
            ok, done = result
            self.counts["deliveries" if ok else "failures"] += 1
            when = self.now_ms()
            return self._propose(key, sub_command(
                sub.bucket, sub.id, "delivered", wake_id=wake.wake_id, ok=ok, done=done,
                next_attempt_ms=0 if ok else self.retry_at(attempts, when)))
        d = self.keys.get().addCallback(send)
        d.addCallbacks(answered, failed)
        return d.addCallback(record)

    def _write_wake_event(self, sub, wake, now: int) -> defer.Deferred:
        key = (sub.bucket, sub.id)
        first = next(iter(sorted(wake.snapshot)), None)
        event = json.dumps({"type": "wake", "subscription_id": sub.id, "stream": first,
                            "generation": wake.generation, "ts": now},
                           separators=(",", ":")).encode()
        append = C.Append(sub.bucket, sub.config["wake_stream"], "application/json", event)
        attempts = wake.attempts

        def written(outcome):
            ok = outcome.error is None
            if ok:
                self.counts["wake_events"] += 1
            else:
                self.counts["failures"] += 1
                log.info("subscription {id}: wake event not written ({why})", id=sub.id,
                         why=outcome.error)
            return ok

        def failed(failure):
            self.counts["failures"] += 1
            return False

        def record(ok):
            return self._propose(key, sub_command(
                sub.bucket, sub.id, "delivered", wake_id=wake.wake_id, ok=ok, done=False,
                next_attempt_ms=0 if ok else self.retry_at(attempts, self.now_ms())))
        d = defer.maybeDeferred(self.core.submit, append)
        return d.addCallbacks(written, failed).addCallback(record)

    # -- tails ------------------------------------------------------------------------------

    def _flush_dirty(self) -> None:
        self._flush_armed = False
        for key in list(self._dirty):
            if key in self._tails_busy:
                continue
            names = self._dirty.pop(key)
            self._refresh(key, names)

    def _refresh(self, key, names, listed=None) -> defer.Deferred:
        """Head ``names`` (plus what a listing found) and propose what changed."""
        bucket, sub_id = key
        self._tails_busy.add(key)
        names = sorted(names)

        def headed(results):
            tails = list(listed or ())
            gone = []
            for name, (ok, value) in zip(names, results, strict=True):
                if ok:
                    tails.append([name, value.uid, value.tail])
                elif value.check(StreamError) and value.value.code in ("not_found", "gone"):
                    gone.append(name)
            sub = self._sub(key)
            if sub is None or not self._differs(sub, tails, gone):
                return None
            return self.core.submit(sub_command(bucket, sub_id, "tails", tails=tails,
                                                gone=gone))

        def done(result):
            self._tails_busy.discard(key)
            if key in self._dirty and not self._flush_armed:
                self._flush_armed = True
                self.reactor.callLater(0, self._flush_dirty)
            return None
        heads = [self.core.head(bucket, name) for name in names]
        d = defer.DeferredList(heads, consumeErrors=True).addCallback(headed)
        d.addErrback(lambda f: log.debug("subscription {id}: tails not refreshed ({why})",
                                         id=sub_id, why=f.getErrorMessage()))
        return d.addBoth(done)

    def _sub(self, key):
        group = self.raft.groups.get(self._group_of(key))
        if group is None:
            return None
        return group.machine.subscriptions.get(*key)

    def _group_of(self, key) -> int:
        return group_of(key[0], sub_key(key[1]), self.raft.group_count)

    @staticmethod
    def _differs(sub, tails, gone) -> bool:
        for name, uid, tail in tails:
            link = sub.links.get(name)
            if link is None or link.uid != uid or link.tail != tail:
                return True
        return any(name in sub.links and sub.links[name].uid for name in gone)

    def reconcile(self, sub) -> defer.Deferred:
        """The safety net: list the pattern's streams and head the explicit links."""
        key = (sub.bucket, sub.id)
        if key in self._tails_busy:
            return defer.succeed(None)
        if sub.pattern is None:
            return self._refresh(key, set(sub.links))

        def listed(found):
            seen = {name for name, _, _ in found}
            others = {p for p, link in sub.links.items() if p not in seen}
            return self._refresh(key, others, listed=found)
        s = self.settings
        d = list_matching(self.core, sub.bucket, sub.pattern, s.max_list_streams,
                          s.reconcile_max_streams)
        return d.addCallback(listed).addErrback(
            lambda f: log.debug("subscription {id}: reconcile failed ({why})", id=sub.id,
                                why=f.getErrorMessage()))

def attach(core, config, reactor, keys):
    """Start a ``SubscriptionService`` for the ``RaftCore`` behind ``core`` (a ``RaftCore`` or a
    ``RoutedCore``); None for cores without Raft groups (test fakes) or when disabled."""
    from ursula.core.webhooks import WebhookSender
    raft = getattr(core, "raft", core)
    if not hasattr(raft, "subscription_hooks") or not config.subscriptions.enabled:
        return None
    s = config.subscriptions
    settings = SubscriptionSettings(
        tick_ms=s.tick_ms, reconcile_ms=s.reconcile_ms, retry_initial_ms=s.retry_initial_ms,
        retry_max_ms=s.retry_max_ms, token_ttl_ms=s.token_ttl_ms,
        max_list_streams=config.limits.max_list_streams)
    sender = WebhookSender(reactor, s.webhook_timeout_ms / 1000.0, s.max_webhook_answer_bytes,
                           allow_loopback=s.allow_loopback_webhooks)
    service = SubscriptionService(reactor, raft, core, keys, sender, settings)
    reactor.callWhenRunning(service.start)
    return service
