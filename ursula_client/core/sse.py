"""An incremental Server-Sent Events parser, and the Durable Streams reading of its events:
``data`` events (text, JSON arrays, or base64 for binary streams) held until the ``control``
event that follows them gives their end offset.

Data is only released with its control event: a connection that drops between the two loses
that data here, and the reconnect (from the last control's offset) reads it again, so a
follower sees every byte exactly once.

May import: the standard library and ``ursula_client.core`` modules.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any

from ursula_client.core.types import ReadBatch

_BREAK = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True)
class Event:
    event: str
    data: str
    id: str | None = None


class EventParser:
    """Bytes in (any split), whole events out, as the SSE spec parses them: lines end at CR,
    LF or CRLF; one space after the colon is dropped; ``data`` lines join with LF; comments
    (``:``) and blank events are skipped."""

    def __init__(self) -> None:
        self._buffer = b""
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._cr_pending = False

    def feed(self, chunk: bytes) -> list[Event]:
        data = self._buffer + chunk
        if self._cr_pending and data.startswith(b"\n"):
            data = data[1:]  # the LF of a CRLF split across chunks
        self._cr_pending = False
        events: list[Event] = []
        pos = 0
        while True:
            match = _BREAK.search(data, pos)
            if match is None:
                break
            if match.group() == b"\r" and match.end() == len(data):
                self._cr_pending = True
            line = data[pos:match.start()]
            pos = match.end()
            event = self._line(line.decode("utf-8", "replace"))
            if event is not None:
                events.append(event)
        self._buffer = data[pos:]
        return events

    def _line(self, line: str) -> Event | None:
        if not line:
            if not self._data and not self._event:
                return None
            event = Event(self._event or "message", "\n".join(self._data), self._id)
            self._event, self._data = "", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        return None


class StreamEvents:
    """The Durable Streams meaning of an SSE answer: ``feed`` bytes, get ``ReadBatch`` values,
    one per control event (``offset`` is where the batch starts)."""

    def __init__(self, offset: str, *, json_mode: bool, base64_mode: bool):
        self.offset = offset
        self.json_mode = json_mode
        self.base64_mode = base64_mode
        self.parser = EventParser()
        self._data: list[bytes] = []
        self._records: list[Any] = []
        self.closed = False

    def feed(self, chunk: bytes) -> list[ReadBatch]:
        out = []
        for event in self.parser.feed(chunk):
            if event.event == "data":
                self._on_data(event.data)
            elif event.event == "control":
                out.append(self._on_control(event.data))
        return out

    def _on_data(self, text: str) -> None:
        if self.base64_mode:
            payload = base64.b64decode("".join(text.split()))
        else:
            payload = text.encode("utf-8")
        if self.json_mode:
            value = json.loads(payload) if payload.strip() else []
            self._records.extend(value if isinstance(value, list) else [value])
        self._data.append(payload)

    def _on_control(self, text: str) -> ReadBatch:
        control = json.loads(text)
        next_offset = control["streamNextOffset"]
        if self.json_mode:
            records = tuple(self._records)
            data = json.dumps(list(records), separators=(",", ":")).encode() if records else b""
        else:
            records, data = None, b"".join(self._data)
        batch = ReadBatch(offset=self.offset, next_offset=next_offset, data=data,
                          json_mode=self.json_mode, up_to_date=bool(control.get("upToDate")),
                          closed=bool(control.get("streamClosed")),
                          cursor=control.get("streamCursor"), _records=records)
        self.offset = next_offset
        self.closed = self.closed or batch.closed
        self._data, self._records = [], []
        return batch
