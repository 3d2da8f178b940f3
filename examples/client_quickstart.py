"""The blocking client in a script: create a stream, append, read it back, follow it to its end.

    python examples/client_quickstart.py [--url http://127.0.0.1:4437]
"""

from __future__ import annotations

import argparse
import uuid

from ursula_client import START
from ursula_client.sync import Client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:4437")
    args = parser.parse_args()
    with Client(args.url) as client:
        stream = client.stream(f"examples/chat-{uuid.uuid4().hex[:8]}")
        stream.create("application/json", ttl_seconds=3600)
        stream.append({"user": "ada", "text": "hello"})
        stream.append_json([{"user": "bob", "text": "hi"}, {"user": "ada", "text": "bye"}])
        print("read:", stream.read(START).records)
        stream.close()  # readers see the end of the stream
        for batch in stream.follow(START):  # ends at the close
            for message in batch.records:
                print(f"{message['user']}: {message['text']}  (next offset {batch.next_offset})")
        print("head:", stream.head())


if __name__ == "__main__":
    main()
