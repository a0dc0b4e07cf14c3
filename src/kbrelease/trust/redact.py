"""Secrets out of everything kbrelease prints, logs, answers or writes.

One function, :func:`redact`, removes from any text: the userinfo of URLs
(``http://user:pass@host`` → ``http://***@host``), bearer tokens, ``token=`` /
``api_key=`` / ``password=`` / ``secret=`` style query and key-value pairs, and
every secret value registered at config load (:func:`register_secret`), wherever
it appears. It is applied in the error printer of the CLI, the HTTP error
bodies, the log formatter of the service, and to manifests and rendered YAML.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit, urlunsplit

MASK = "***"
# userinfo may itself hold an '@' (an unencoded password): up to the last '@' before the path.
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/\s?#'\"]+)@")
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{4,}")
# HTTP Basic credentials (base64 of user:password); a digit, '+', '/' or '=' tells them from the English word.
_BASIC = re.compile(r"(?i)(\bbasic\s+)(?=[A-Za-z0-9+/]*[0-9+/=])[A-Za-z0-9+/]{8,}={0,2}")
_SECRET_KEY_NAMES = r"(?:token(?!s\b|iz)|api[_-]?key|apikey|password|passwd|secret|access[_-]?key|signature|credential)"  # noqa: S105 - key names, not a password
_KEYVAL = re.compile(
    rf"(?i)(?P<key>\b(?:[A-Za-z0-9_]*{_SECRET_KEY_NAMES}[A-Za-z0-9_]*))"
    r"(?P<sep>\s*[=:]\s*|=)(?P<q>\\?['\"]?)(?P<val>[^\s'\"\\&,;)}\]]+)"
)
# A JSON pair with a secret-looking key and a string value ("api_key": "..."), also JSON-escaped inside a log line.
_JSON_PAIR = re.compile(rf'(?i)(?P<pre>(?P<e>\\?)"[A-Za-z0-9_-]*{_SECRET_KEY_NAMES}[A-Za-z0-9_-]*(?P=e)"\s*:\s*(?P=e)")(?P<val>[^"\\]+)(?=(?P=e)")')
_lock = threading.Lock()
_secrets: set[str] = set()
_MIN_SECRET = 4


def register_secret(value: str | None) -> None:
    """Remember a secret value (a token, a key) so :func:`redact` masks it wherever it appears.

    Its URL-encoded and JSON-escaped forms are remembered too: a secret can reach
    a log line inside a query string or a JSON document.
    """
    if not value or len(value) < _MIN_SECRET:
        return
    forms = {value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1]}
    with _lock:
        _secrets.update(forms)


def registered() -> list[str]:
    """The registered secret values, longest first (for checks that nothing carries one)."""
    with _lock:
        return sorted(_secrets, key=len, reverse=True)


def _keyval(m: re.Match[str]) -> str:
    if m.group("val") == MASK:
        return m.group(0)
    return f"{m.group('key')}{m.group('sep')}{m.group('q')}{MASK}"


def redact_known(text: object) -> str:
    """``text`` with the registered secrets and URL userinfo masked, and nothing else.

    For data output (search results, listings): the key-value heuristics of
    :func:`redact` would also mask a document that says ``password: see the wiki``.
    """
    out = str(text)
    for secret in registered():
        if secret in out:
            out = out.replace(secret, MASK)
    return _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", out)


def redact(text: object) -> str:
    """``text`` (anything, via ``str``) with every secret it holds masked: for messages, logs and error bodies."""
    out = redact_known(text)
    out = _BEARER.sub(lambda m: f"{m.group(1)}{MASK}", out)
    out = _BASIC.sub(lambda m: f"{m.group(1)}{MASK}", out)
    out = _JSON_PAIR.sub(lambda m: f"{m.group('pre')}{MASK}", out)
    return _KEYVAL.sub(_keyval, out)


def redact_data(data: object) -> Any:
    """``data`` (JSON-like: dicts, lists, strings, numbers) with every string in it redacted; keys are kept."""
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, dict):
        return {key: redact_data(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [redact_data(value) for value in data]
    return data


def redact_url(url: str | None) -> str:
    """A URL without its userinfo and without secret-looking query values (for display)."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    return redact(urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)))


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record's message and arguments (install on handlers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a broken format string: leave it to the handler's own error path
            return True
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            # Formatters reuse a cached exc_text: fill it, redacted, before any handler formats the traceback.
            record.exc_text = _TRACEBACKS.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_TRACEBACKS = logging.Formatter()
