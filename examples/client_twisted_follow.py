"""The Twisted front end: a producer and a follower on the reactor, with Deferreds and
``async for`` in a coroutine.

    python examples/client_twisted_follow.py [--url http://127.0.0.1:4437]
"""

from __future__ import annotations

import argparse
import uuid

from twisted.internet import defer, task

from ursula_client.twisted import Client


async def run(reactor, url: str) -> None:
    client = Client(url, reactor=reactor)
    stream = client.stream(f"examples/log-{uuid.uuid4().hex[:8]}")
    yield_ = await stream.create("text/plain")
    print("created:", yield_.created)

    async def follow() -> list[bytes]:
        lines = []
        async for batch in stream.follow(live="long-poll"):  # reconnects by itself
            lines.extend(line for line in batch.data.split(b"\n") if line)
        return lines

    following = defer.Deferred.fromCoroutine(follow())
    producer = stream.producer("twisted-writer")
    for i in range(100):
        producer.append(f"line {i}\n")
    await producer.close(close_stream=True)
    lines = await following
    print(f"followed {len(lines)} lines, last {lines[-1]!r}")
    await client.close()


def main(reactor, *argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:4437")
    args = parser.parse_args(argv)
    return defer.Deferred.fromCoroutine(run(reactor, args.url))


if __name__ == "__main__":
    import sys
    task.react(main, sys.argv[1:])
