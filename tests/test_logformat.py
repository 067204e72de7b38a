"""The one log format: keys, RFC 3339 times, structured fields, and secrets masked."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from pathlib import Path

import pytest

from grantbox.drivers.local import exit_status, last_error_line
from grantbox.logformat import REDACTED, JsonFormatter, json_logging, mask, parse_line

JWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJzcGlmZmU6Ly9leGFtcGxlIn0.c2lnbmF0dXJlLWJ5dGVz"
TOKEN = "tok_4fj3kd93jf83jdk2"


def _record(
    text: str, *args: object, level: int = logging.WARNING, **fields: object
) -> logging.LogRecord:
    record = logging.LogRecord("grantbox.test", level, __file__, 1, text, args, None)
    if fields:
        record.fields = fields
    return record


def test_every_line_has_the_same_keys_and_an_rfc3339_time() -> None:
    line = json.loads(JsonFormatter().format(_record("sandbox %s ready", "box", sandbox="box")))
    assert list(line)[:4] == ["time", "level", "logger", "message"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    assert line["level"] == "warning" and line["logger"] == "grantbox.test"
    assert line["message"] == "sandbox box ready" and line["sandbox"] == "box"
    assert parse_line(json.dumps(line)) == line


def test_fields_cannot_overwrite_the_fixed_keys() -> None:
    record = _record("real")
    record.fields = {"message": "forged", "level": "info", "time": "then"}
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "real" and line["level"] == "warning"


def test_exceptions_are_named_never_quoted() -> None:
    try:
        raise RuntimeError(f"issuer said Bearer {TOKEN}")
    except RuntimeError:
        record = logging.LogRecord(
            "grantbox.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    text = JsonFormatter().format(record)
    assert json.loads(text)["error"] == "RuntimeError"
    assert TOKEN not in text and "Traceback" not in text


@pytest.mark.parametrize(
    "fields",
    [
        {"authorization": f"Bearer {TOKEN}"},
        {"Authorization": TOKEN},
        {"headers": {"Proxy-Authorization": TOKEN, "accept": "*/*"}},
        {"token": TOKEN},
        {"client_assertion": JWT},
        {"svid": JWT},
        {"detail": f"got Bearer {TOKEN} back"},
        {"detail": f"assertion {JWT} refused"},
        {"items": [f"bearer {TOKEN}", {"access_token": TOKEN}]},
    ],
)
def test_credentials_in_fields_are_masked(fields: dict[str, object]) -> None:
    text = JsonFormatter().format(_record("request", **fields))
    assert TOKEN not in text and JWT not in text and JWT.split(".")[2] not in text
    assert REDACTED in text


def test_credentials_in_messages_are_masked() -> None:
    text = JsonFormatter().format(_record("headers: %s", {"Authorization": f"Bearer {TOKEN}"}))
    assert TOKEN not in text
    assert mask(f"x {JWT} y") == f"x {REDACTED} y"
    assert mask("a bearer token is needed") == "a bearer token is needed"  # prose stays


def test_json_logging_covers_third_party_loggers_and_restores_everything() -> None:
    root = logging.getLogger()
    before = (root.handlers[:], root.level)
    stream = io.StringIO()
    with json_logging("info", stream):
        logging.getLogger("somelibrary.pool").warning("port busy")
        logging.getLogger("grantbox.gateway").info("started", extra={"fields": {"port": 1}})
        logging.getLogger("grantbox.gateway").debug("not shown")
    assert (root.handlers, root.level) == before
    records = [parse_line(line) for line in stream.getvalue().splitlines()]
    assert [(r["logger"], r["message"]) for r in records if r] == [
        ("somelibrary.pool", "port busy"),
        ("grantbox.gateway", "started"),
    ]
    assert records[1] is not None and records[1]["port"] == 1


def test_the_local_driver_reads_the_supervisors_json_log(tmp_path: Path) -> None:
    log = tmp_path / "supervisor.log"
    formatter = JsonFormatter()
    lines = [
        formatter.format(_record("cannot reach the gateway")),
        formatter.format(
            logging.LogRecord(
                "grantbox.sandbox", logging.INFO, __file__, 1, "agent running", (), None
            )
        ),
        "not json at all",
    ]
    log.write_text("\n".join(lines) + "\n")
    assert last_error_line(log) == "cannot reach the gateway"
    assert exit_status(3, log).message == "supervisor exited with 3: cannot reach the gateway"
