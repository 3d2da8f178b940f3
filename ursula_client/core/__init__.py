"""The protocol core of the client, shared by every front end: request building, answer and
header parsing, offsets, SSE parsing, the retry policy, the follower's and the idempotent
producer's state machines. No I/O, no clock, no event loop: values in, values out.

May import: the standard library and ``ursula_client.core`` modules.
"""
