"""Log lines for machines (one JSON object a line) or people (text), with secrets scrubbed.

Structured fields travel in a record's ``ghacache`` attribute (``extra={"ghacache": {...}}``).
Whatever a message says, the formatters cut out bearer tokens, JWTs, ``Authorization``
values and URL signatures (``sig=``, SAS, S3 and GCS presigned queries) before a line is
written: the access middleware never logs them, and this catches anything else (an
exception text, a library's message).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

FIELDS_ATTR = "ghacache"
REDACTED = "[REDACTED]"
_SECRETS = [
    (re.compile(r"(?i)\bbearer\s+[^\s\"',;]+"), f"Bearer {REDACTED}"),
    (re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)[^\"',\n]+"), rf"\g<1>{REDACTED}"),
    (re.compile(r"\beyJ[\w-]+\.[\w-]+\.[\w-]*"), REDACTED),  # a JWT, wherever it appears
    (
        re.compile(
            r"(?i)\b(sig|signature|x-amz-signature|x-amz-credential|x-amz-security-token|"
            r"x-goog-signature|x-goog-credential)=[^&\s\"'#]+"
        ),
        rf"\g<1>={REDACTED}",
    ),
]


def redact(text: str) -> str:
    """``text`` without tokens, Authorization values or URL signatures."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, FIELDS_ATTR, None)
    if not isinstance(fields, dict):
        return {}
    return {k: redact(v) if isinstance(v, str) else v for k, v in fields.items()}


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", ...fields, "exception"?}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, Any] = {
            "time": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
            **_fields(record),
        }
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            line["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message key=value ...``; what the message already says is not repeated."""

    SHOWN = frozenset({"method", "path", "status"})

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        extra = [
            f"{k}={_text_value(v)}"
            for k, v in _fields(record).items()
            if k not in self.SHOWN and v is not None
        ]
        return " ".join([super().formatMessage(record), *extra])

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def _text_value(value: object) -> str:
    text = str(value)
    return json.dumps(text) if not text or any(c.isspace() or c == '"' for c in text) else text


def configure_logging(level: str, fmt: str, stream: TextIO | None = None) -> None:
    """Send every log record to ``stream`` (stderr) as ``fmt``: json, text or auto.

    ``auto`` is text on a terminal and JSON otherwise (a log collector reads it).
    """
    out = stream if stream is not None else sys.stderr
    if fmt == "auto":
        fmt = "text" if out.isatty() else "json"
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler])
