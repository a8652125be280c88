"""The one redactor: every secret of the configuration, masked in every text the program emits.

`REDACTOR` is filled once at start (`remember`, from `secrets_in` over the settings and every
source's validated options) and applied at each exit: log events (a structlog processor), the
CLI's stdout and stderr (`ScrubbingStream`, installed by `connector.cli.main`), the daemon's HTTP
answers, and the run errors kept in the state store. Anything that writes text for a person or a
program goes through `REDACTOR.scrub(text)` or `REDACTOR.mask(document)`.

What counts as a secret, so that a plug-in needs nothing special: every `SecretStr`, the password
of any URL (a DSN, `state.url`), and every string under a key that names a credential (`token`,
`password`, `api_key`, `authorization`, `cookie`...; so a `headers: {X-Api-Key: ...}` value is one).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any, TextIO
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, SecretBytes, SecretStr

REDACTED = "[REDACTED]"
# Shorter values are too likely to be ordinary words or numbers to be replaced everywhere.
MIN_SECRET_LENGTH = 4
SECRET_KEY = re.compile(
    r"(token|secret|password|passwd|authorization|api[_-]?key|apikey|dsn|cookie|credential"
    r"|private[_-]?key|^key$|-key$|_key$)",
    re.I,
)
_URL_WITH_USERINFO = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/@\s]*@")


_USERINFO_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\- ]*://[^:/@\s]*:)[^@\s]*@")


def mask_url_password(text: str) -> str:
    """`text` with the password of every URL in it as `***`; scheme, host, port and database kept.

    For URLs that do not parse (a malformed `state.url`): the masking must not need them to.
    """
    return _USERINFO_PASSWORD.sub(r"\g<head>***@", text)


def url_password(text: str) -> str | None:
    """The password of a URL with userinfo (`scheme://user:password@host`), if it has one."""
    if not _URL_WITH_USERINFO.match(text):
        return None
    try:
        password = urlsplit(text).password
    except ValueError:
        # Not parseable as a URL: everything between the first ':' of the userinfo and '@'.
        userinfo = text.split("://", 1)[1].rsplit("@", 1)[0]
        password = userinfo.partition(":")[2] or None
    return password


def secrets_in(value: Any, *, secret: bool = False) -> Iterator[str]:
    """Every secret value inside a settings object, options model, mapping or list.

    `secret` says the value sits under a key that names a credential.
    """
    if isinstance(value, SecretStr):
        yield from secrets_in(value.get_secret_value(), secret=True)
    elif isinstance(value, SecretBytes):
        yield value.get_secret_value().decode("utf-8", "replace")
    elif isinstance(value, str):
        password = url_password(value)
        if password:
            yield password
            yield unquote(password)
        if secret:
            yield value
            # `Bearer abc...`, `Basic abc...`: the credential alone is quoted back too.
            scheme, _, credential = value.partition(" ")
            if credential and scheme.isalpha():
                yield credential
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from secrets_in(getattr(value, name), secret=bool(SECRET_KEY.search(name)))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from secrets_in(item, secret=secret or bool(SECRET_KEY.search(str(key))))
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from secrets_in(item, secret=secret)


class Redactor:
    """Known secret values, and the masking of them (plus secret-named keys) in any output."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets: list[str] = []
        self.remember(secrets)

    def add(self, secret: str | None) -> None:
        """Also mask this value from now on."""
        self.remember([secret] if secret else [])

    def remember(self, secrets: Iterable[str | None]) -> None:
        """Also mask these values from now on."""
        known = set(self.secrets)
        for secret in secrets:
            if secret and len(secret) >= MIN_SECRET_LENGTH and secret not in known:
                known.add(secret)
                self.secrets.append(secret)
        # Longest first, so that a secret containing another is replaced whole.
        self.secrets.sort(key=len, reverse=True)

    def scrub(self, text: str) -> str:
        """The text with every known secret replaced by REDACTED."""
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def mask(self, value: Any, *, by_key: bool = True) -> Any:
        """A JSON-like document with every known secret masked, and (`by_key`) the value of
        every key that names a credential (keys that are data, like source names, opt out)."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {
                k: REDACTED
                if by_key and v and SECRET_KEY.search(str(k))
                else self.mask(v, by_key=by_key)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.mask(v, by_key=by_key) for v in value]
        return value

    def __call__(
        self, logger: Any, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """As a structlog processor."""
        for key, value in list(event_dict.items()):
            if SECRET_KEY.search(key):
                event_dict[key] = REDACTED
            else:
                event_dict[key] = self.mask(value)
        return event_dict


REDACTOR = Redactor()


class ScrubbingStream(io.TextIOBase):
    """A text stream that scrubs every known secret from what is written through it.

    Whole lines are scrubbed at once (a secret split across two `write` calls would otherwise
    pass): text is held until a newline, a `flush`, or the end.
    """

    def __init__(self, stream: TextIO, redactor: Redactor = REDACTOR) -> None:
        self._stream = stream
        self._redactor = redactor
        self._pending = ""

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._stream.encoding

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return self._stream.errors

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending:
            complete, _, self._pending = self._pending.rpartition("\n")
            self._stream.write(self._redactor.scrub(complete + "\n"))
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self._stream.write(self._redactor.scrub(self._pending))
            self._pending = ""
        self._stream.flush()
