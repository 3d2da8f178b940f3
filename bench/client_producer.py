"""Records per second of ursula_client's idempotent producer against one ursula node.

Starts a fresh node (``bench/servers.py``: "ursula" is fsync=always, "ursula-nofsync"), then
for each front end writes ``--records`` records of ``--size`` bytes through one producer with
batching on (and, for comparison, with batching off: one record per request, still
pipelined), waits for every acknowledgement, checks the stream holds every record once, in
order, and prints a table (``--json`` for the raw figures).

    python bench/client_producer.py [--server ursula] [--records 100000] [--size 100]
        [--frontends asyncio,twisted,sync] [--rounds 3] [--no-unbatched]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import sys
import tempfile
import time
import uuid

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from servers import SERVERS, Server  # noqa: E402

from ursula_client import ProducerSettings  # noqa: E402

BATCHED = ProducerSettings(linger=0.005, max_batch_bytes=1024 * 1024, max_in_flight=5)
UNBATCHED = ProducerSettings(linger=0.0, max_batch_bytes=1, max_in_flight=5)
#: the asyncio and Twisted writers give the loop a turn every this many records (a writer that
#: never yields would have every record buffered before the first batch leaves)
YIELD_EVERY = 1000


def payloads(count: int, size: int) -> list[bytes]:
    return [(b"%010d" % i).ljust(size - 1, b"x") + b"\n" for i in range(count)]


def check(data: bytes, count: int) -> None:
    lines = data.split(b"\n")[:-1]
    assert len(lines) == count, f"{len(lines)} records stored, {count} written"
    assert all(int(line[:10]) == i for i, line in enumerate(lines)), "not in order"


async def run_asyncio(url: str, records: list[bytes], settings: ProducerSettings) -> dict:
    from ursula_client.aio import AsyncClient
    async with AsyncClient(url) as client:
        stream = client.stream(f"bench/{uuid.uuid4().hex}", content_type="text/plain")
        await stream.create()
        producer = stream.producer("bench", settings=settings)
        cpu, started = time.process_time(), time.perf_counter()
        for i, record in enumerate(records):
            producer.append(record)
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)  # let the loop send while records keep coming
        await producer.flush()
        took, cpu = time.perf_counter() - started, time.process_time() - cpu
        check((await stream.read_all()).data, len(records))
        return {"seconds": took, "client_cpu_s": cpu, "batches": producer.stats.batches_sent,
                "retries": producer.stats.retries}


def run_twisted(url: str, records: list[bytes], settings: ProducerSettings) -> dict:
    from twisted.internet import defer, task

    from ursula_client.twisted import Client
    out: dict = {}

    async def main(reactor):
        client = Client(url, reactor=reactor)
        stream = client.stream(f"bench/{uuid.uuid4().hex}", content_type="text/plain")
        await stream.create()
        producer = stream.producer("bench", settings=settings)
        cpu, started = time.process_time(), time.perf_counter()
        for i, record in enumerate(records):
            producer.append(record)
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                await task.deferLater(reactor, 0, lambda: None)
        await producer.flush()
        out.update(seconds=time.perf_counter() - started, client_cpu_s=time.process_time() - cpu,
                   batches=producer.stats.batches_sent, retries=producer.stats.retries)
        check((await stream.read_all()).data, len(records))
        await client.close()
        print(json.dumps(out), flush=True)  # react() exits the process

    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor)))
    return out


def run_sync(url: str, records: list[bytes], settings: ProducerSettings) -> dict:
    from ursula_client.sync import Client
    with Client(url) as client:
        stream = client.stream(f"bench/{uuid.uuid4().hex}", content_type="text/plain")
        stream.create()
        producer = stream.producer("bench", settings=settings)
        cpu, started = time.process_time(), time.perf_counter()
        for record in records:
            producer.append(record)
        producer.flush()
        took, cpu = time.perf_counter() - started, time.process_time() - cpu
        check(stream.read_all().data, len(records))
        return {"seconds": took, "client_cpu_s": cpu, "batches": producer.stats.batches_sent,
                "retries": producer.stats.retries}


def one_round(frontend: str, url: str, count: int, size: int, batched: bool) -> dict:
    """One measurement in a child process (a reactor cannot be restarted; a fresh process
    also keeps rounds apart)."""
    import subprocess
    result = subprocess.run([sys.executable, __file__, "--child", frontend, url, str(count),
                             str(size), "1" if batched else "0"], capture_output=True,
                            text=True, timeout=900,
                            env={**os.environ, "PYTHONPATH": str(HERE.parent)})
    if result.returncode != 0:
        raise RuntimeError(f"{frontend} round failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def child(frontend: str, url: str, count: int, size: int, batched: bool) -> None:
    records = payloads(count, size)
    settings = BATCHED if batched else UNBATCHED
    if frontend == "asyncio":
        out = asyncio.run(run_asyncio(url, records, settings))
    elif frontend == "twisted":
        out = run_twisted(url, records, settings)
    else:
        out = run_sync(url, records, settings)
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="ursula", choices=[s["name"] for s in SERVERS
                                                               if s["kind"] == "ursula"])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--frontends", default="asyncio,twisted,sync")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--unbatched-records", type=int, default=5_000,
                        help="records of the batching-off comparison (it is slow)")
    parser.add_argument("--no-unbatched", action="store_true")
    parser.add_argument("--json", help="write the raw figures here")
    args = parser.parse_args()
    spec = next(s for s in SERVERS if s["name"] == args.server)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ursula-client-bench-") as workdir:
        server = Server(spec, workdir, None).start(30)
        try:
            load = os.getloadavg()
            for frontend in args.frontends.split(","):
                cases = [(True, args.records)]
                if not args.no_unbatched:
                    cases.append((False, args.unbatched_records))
                for batched, count in cases:
                    for r in range(args.rounds):
                        out = one_round(frontend, server.base, count, args.size, batched)
                        out.update(frontend=frontend, batched=batched, records=count,
                                   round=r + 1, records_per_s=count / out["seconds"])
                        rows.append(out)
                        print(f"{frontend:8} batching {'on ' if batched else 'off'} "
                              f"round {r + 1}: {out['records_per_s']:9.0f} records/s "
                              f"({count} x {args.size} B in {out['seconds']:.2f} s, "
                              f"{out['batches']} requests, client CPU "
                              f"{out['client_cpu_s']:.2f} s)", flush=True)
            load_after = os.getloadavg()
        finally:
            server.stop()
    print(f"\nserver: {spec['label']}; {args.size} B records; load average "
          f"{load[0]:.2f} before, {load_after[0]:.2f} after; {os.cpu_count()} CPUs")
    print("| front end | batching | records | records/s (median of rounds) | requests |")
    print("|---|---|---|---|---|")
    for frontend in args.frontends.split(","):
        for batched in (True, False):
            got = sorted((r for r in rows if r["frontend"] == frontend
                          and r["batched"] == batched), key=lambda r: r["records_per_s"])
            if got:
                mid = got[len(got) // 2]
                print(f"| {frontend} | {'on' if batched else 'off'} | {mid['records']} | "
                      f"{mid['records_per_s']:.0f} | {mid['batches']} |")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"server": args.server, "rows": rows,
                                                       "load": [load, load_after]}, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6] == "1")
    else:
        main()
