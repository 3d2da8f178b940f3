"""An exactly-once producer on asyncio: batched, pipelined appends that survive retries,
timeouts and a node failing over (give every node's URL), then a follower that reads them.

    python examples/client_producer_asyncio.py --url http://127.0.0.1:4437 [--url ...] [-n 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

from ursula_client import START, ProducerFenced
from ursula_client.aio import AsyncClient


async def main(urls: list[str], count: int) -> None:
    async with AsyncClient(urls) as client:
        stream = client.stream(f"examples/events-{uuid.uuid4().hex[:8]}")
        await stream.create("application/json")
        # one producer id per logical writer; a restarted writer passes auto_claim=True (or
        # its last epoch + 1) so that the server fences the old one instead of deduplicating
        producer = stream.producer("orders-service", auto_claim=True, linger=0.005,
                                   max_batch_bytes=256 * 1024, max_in_flight=5)
        started = time.monotonic()
        for i in range(count):
            producer.append({"order": i, "amount": i % 97})  # never blocks; batched
        try:
            await producer.close(close_stream=True)  # flush, then close the stream
        except ProducerFenced as error:
            print("another instance took over with epoch", error.current_epoch)
            raise
        took = time.monotonic() - started
        print(f"{count} records in {took:.2f} s ({count / took:.0f}/s), "
              f"{producer.stats.batches_sent} batches, {producer.stats.retries} retries")
        seen = 0
        async for batch in stream.follow(START, live="sse"):
            seen += len(batch.records)
        print(f"followed {seen} records to the end of the stream")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", action="append", dest="urls")
    parser.add_argument("-n", type=int, default=10000)
    args = parser.parse_args()
    asyncio.run(main(args.urls or ["http://127.0.0.1:4437"], args.n))
