"""A pull-wake worker with the blocking client: subscribe to a pattern, claim a wake, read what
is new on each stream, acknowledge it.

    python examples/client_pull_wake.py [--url http://127.0.0.1:4437]
"""

from __future__ import annotations

import argparse
import time
import uuid

from ursula_client import SubscriptionError
from ursula_client.sync import Client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:4437")
    args = parser.parse_args()
    prefix = f"examples/jobs-{uuid.uuid4().hex[:8]}"
    with Client(args.url) as client:
        client.stream(f"{prefix}-wakes").create("application/json")
        job = client.stream(f"{prefix}/a")
        job.create("text/plain")
        subs = client.subscriptions()
        subs.put("worker-pool", {"type": "pull-wake", "pattern": f"{prefix}/*",
                                 "wake_stream": f"{prefix}-wakes", "lease_ttl_ms": 30000})
        job.append("resize photo 1;")
        for _ in range(50):
            try:
                wake = subs.claim("worker-pool", "worker-1")
                break
            except SubscriptionError as error:
                if error.code != "NO_PENDING_WORK":
                    raise
                time.sleep(0.1)
        else:
            raise SystemExit("no wake")
        acks = {}
        for linked in wake.streams:
            # acked_offset is "-1" for a stream linked before its first data
            batch = client.stream(linked.path).read(linked.acked_offset or "-1")
            print(f"{linked.path}: {batch.text!r}")
            acks[linked.path] = batch.next_offset
        print("ack:", subs.ack("worker-pool", wake, acks, done=True))
        subs.delete("worker-pool")


if __name__ == "__main__":
    main()
