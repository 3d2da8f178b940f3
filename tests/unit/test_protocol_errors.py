"""The error-code table and ProtocolError."""

import re
from pathlib import Path

import ursula.stream.machine as machine_module
from ursula.protocol.errors import (
    REASON_BY_CODE,
    STATUS_BY_CODE,
    ProtocolError,
    reason_for,
    status_for,
)


def test_protocol_error_fields():
    err = ProtocolError(409, "nope", {"Stream-Closed": "true"})
    assert err.status == 409 and err.reason == "nope" and str(err) == "nope"
    assert err.headers == {"Stream-Closed": "true"}
    assert ProtocolError(400, "x").headers == {}


def test_every_code_has_a_status_and_a_reason():
    assert set(STATUS_BY_CODE) == set(REASON_BY_CODE)
    for code in STATUS_BY_CODE:
        assert 400 <= status_for(code) < 500
        assert reason_for(code) and reason_for(code) != code


def test_selected_statuses():
    assert status_for("producer_epoch_stale") == 403
    assert status_for("invalid_producer") == 400
    assert status_for("producer_seq_gap") == 409
    assert status_for("closed") == 409
    assert status_for("gone") == 410
    assert status_for("too_large") == 413
    assert status_for("not_found") == 404
    assert status_for("soft_deleted_conflict") == 409


def test_unknown_code():
    assert status_for("no_such_code") == 500
    assert reason_for("no_such_code") == "no_such_code"


def test_every_code_the_machine_produces_is_mapped():
    source = Path(machine_module.__file__).read_text()
    produced = set(re.findall(r'(?:error=|StreamError\()"([a-z_]+)"', source))
    produced |= set(re.findall(r'return None, "([a-z_]+)"', source))
    assert "not_found" in produced and "producer_seq_gap" in produced
    assert produced <= set(STATUS_BY_CODE)
