"""Pure Durable Streams protocol helpers: offsets, headers, names, JSON mode, SSE framing.

Everything here is a pure function of its inputs. May import: the standard library only.
It must never import Twisted or read a clock (tests/test_purity.py enforces this).
"""

from ursula.protocol.errors import ProtocolError

__all__ = ["ProtocolError"]
