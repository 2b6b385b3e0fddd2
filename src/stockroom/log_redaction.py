"""No secret in any log line: a structlog processor masks credentials by key (authorization,
cookies, tokens, passwords) and by shape in every string, tracebacks included."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[redacted]"
_MAX_DEPTH = 12  # deeper than any event we log; past it, the rendered-text pass still runs
_PLAIN = frozenset({int, float, bool, type(None)})

# A key names a secret when its last word does: authorization, proxy-authorization, cookie,
# set-cookie, access_token, webhook_secret, x-api-key; token_id and token_hash do not.
_SECRET_KEY = re.compile(
    r"(?:.*[-_. ])?(?:authorization|auth|cookies?|token|secrets?|password|passwd|api[-_]?key)",
    re.IGNORECASE,
)
# Secrets by shape, wherever they appear. Each alternative's group keeps a readable prefix.
_SHAPES = (
    r"(?P<token>sr_)[A-Za-z0-9_-]{20,}",  # our API tokens (domain/users.py)
    r"(?P<whsec>whsec_)[A-Za-z0-9+/=_-]+",  # webhook signing secrets
    r"(?P<bearer>\b(?i:bearer)\s+)[A-Za-z0-9._~+/-]+=*",
    # A header in a repr or a dump: (b'cookie', b'...'), 'authorization': '...', Cookie: ...
    r"(?P<header>\b(?i:(?:proxy-)?authorization|(?:set-)?cookie|x-api-key)"
    r"['\"]?\s*[:,=]\s*b?['\"]?)[^'\"\r\n]+",
    r"(?P<userinfo>://[^/\s:@'\"]*:)[^/\s@'\"]+(?=@)",  # the password in scheme://user:pw@host
)
# A configured secret shorter than this would mask ordinary words in every line.
_MIN_SECRET_LENGTH = 8


class Redactor:
    """The processor, for structlog's chain and the stdlib ProcessorFormatter's; `rendered`
    also wraps a renderer, for secrets inside objects that only their repr shows."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        exact = sorted({s for s in secrets if len(s) >= _MIN_SECRET_LENGTH}, key=len, reverse=True)
        shapes = list(_SHAPES)
        if exact:
            shapes.insert(0, "(?P<exact>)(?:" + "|".join(re.escape(s) for s in exact) + ")")
        source = "|".join(shapes)
        self._text = re.compile(source)
        self._bytes = re.compile(source.encode("utf-8"))
        # Python's re scans an alternation slowly, even a short line: a few substring
        # tests first, since nearly no line holds a secret.
        self._anchors = ("sr_", "whsec_", *exact)
        self._byte_anchors = tuple(a.encode("utf-8") for a in self._anchors)

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        texts = []
        for key, value in event_dict.items():
            if _is_secret_key(key):
                if value is not None:
                    event_dict[key] = REDACTED
            elif type(value) is str:  # the hot path: short plain strings, checked at once
                texts.append(value)
            elif type(value) not in _PLAIN:
                event_dict[key] = self.value(value)
        if texts and self._may_hold("\0".join(texts)):
            for key, value in event_dict.items():
                if type(value) is str:
                    event_dict[key] = self._text.sub(_keep_prefix, value)
        return event_dict

    def text(self, value: str) -> str:
        return self._text.sub(_keep_prefix, value) if self._may_hold(value) else value

    def value(self, value: Any, depth: int = 0) -> Any:
        """`value` with its secrets masked: a new container when one changed, else itself
        (never mutated: it may be the request's ASGI scope)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, bytes | bytearray):
            return (
                self._bytes.sub(_keep_prefix_bytes, value) if self._may_hold_bytes(value) else value
            )
        if depth >= _MAX_DEPTH:
            return value
        if isinstance(value, Mapping):
            masked = {
                k: REDACTED if _is_secret_key(k) and v is not None else self.value(v, depth + 1)
                for k, v in value.items()
            }
            changed = any(masked[k] is not v for k, v in value.items())
            return masked if changed else value
        if isinstance(value, list | tuple):
            if len(value) == 2 and _is_secret_key(value[0]):  # an (ASGI) header pair
                items = [value[0], REDACTED]
            else:
                items = [self.value(item, depth + 1) for item in value]
            if all(new is old for new, old in zip(items, value, strict=True)):
                return value
            return tuple(items) if isinstance(value, tuple) else items
        return value

    def rendered(self, renderer: Processor) -> Processor:
        """`renderer`, with the shapes masked in its output too."""

        def render(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> Any:
            out = renderer(logger, method_name, event_dict)
            if type(out) is bytes and self._may_hold_bytes(out):
                return self._bytes.sub(_keep_prefix_bytes, out)
            return self.text(out) if type(out) is str else out

        return render

    def _may_hold(self, text: str) -> bool:
        for anchor in self._anchors:
            if anchor in text:
                return True
        if "://" in text and "@" in text:
            return True
        low = text.lower()
        return "bearer" in low or "authorization" in low or "cookie" in low or "api-key" in low

    def _may_hold_bytes(self, data: bytes | bytearray) -> bool:
        for anchor in self._byte_anchors:
            if anchor in data:
                return True
        if b"://" in data and b"@" in data:
            return True
        low = data.lower()
        return b"bearer" in low or b"authorization" in low or b"cookie" in low or b"api-key" in low


def _is_secret_key(key: object) -> bool:
    """Memoised (a dict beats lru_cache here): event keys and header names repeat."""
    if not isinstance(key, str | bytes):
        return False
    known = _SECRET_NAMES.get(key)
    if known is None:
        name = key.decode("latin-1") if isinstance(key, bytes) else key
        known = _SECRET_KEY.fullmatch(name) is not None
        if len(_SECRET_NAMES) >= _MAX_NAMES:  # keys of logged user data could be unbounded
            _SECRET_NAMES.clear()
        _SECRET_NAMES[key] = known
    return known


_SECRET_NAMES: dict[str | bytes, bool] = {}
_MAX_NAMES = 4096


def _keep_prefix(match: re.Match[str]) -> str:
    prefix = match.group(match.lastgroup) if match.lastgroup else ""
    return prefix + REDACTED


def _keep_prefix_bytes(match: re.Match[bytes]) -> bytes:
    prefix = match.group(match.lastgroup) if match.lastgroup else b""
    return prefix + REDACTED.encode()
