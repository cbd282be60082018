"""Every input check of the provider, in one place: the hook, the operators, the sensor, the trigger and the
connection all call into this module.

Each validator takes the raw value and ``field=`` (the name the user typed), returns the value normalised to
what is sent (a float for an amount, a canonical UUID, a UTC instant with whole seconds) and otherwise raises
:class:`~airflow_provider_openrouter.exceptions.OpenRouterValidationError` naming the field and what is
allowed. Nothing here does I/O, so every check runs before any request. A rejected value is quoted only
through :func:`~airflow_provider_openrouter._redaction.quoted`, which redacts secrets; and the free-text
fields refuse a value shaped like an API key, so that a value that passes can be logged.

The rules, stated once (the docs quote them):

- **An empty string never means "none".** ``""`` (or only whitespace) is refused everywhere; clearing a value
  is an explicit ``None``. A template that must clear a value renders to ``None``: with the DAG's
  ``render_template_as_native_obj=True`` it is a real ``None``; without it, Jinja prints Python's ``None`` as
  the text ``None``, which the operators and the sensor read back as ``None`` (that exact text only:
  ``""``, ``"none"`` and ``"null"`` are refused). The connection's extras are the one exception: the
  connection form saves an untouched field as ``""``, so there an empty extra means "use the default".
- **Names** (of keys, for create and rename alike, and ``key_name``): a string that is not blank, at most
  :data:`NAME_MAX_LENGTH` characters, without control characters or line breaks, and not shaped like an API
  key. A name the operators create a key under must also not carry :data:`CLAIM_MARKER`.
- **Amounts** (``limit`` and the sensor's USD thresholds): a finite number from 0 to :data:`LIMIT_MAX_USD`.
- **Workspace ids**: any spelling Python's :class:`uuid.UUID` reads (braces, ``urn:uuid:``, 32 hex digits,
  upper case), sent in the canonical lower-case, hyphenated form OpenRouter lists keys under.
- **Instants**: timezone-aware, sent in UTC with whole seconds (``2027-12-31T23:59:59Z``).
- **Intervals**: finite; a poll interval is at least :data:`MIN_POLL_INTERVAL` seconds.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import unicodedata
import uuid
from typing import TYPE_CHECKING, Any, Final, Literal, NoReturn, get_args

from airflow_provider_openrouter._redaction import looks_like_key, quoted
from airflow_provider_openrouter.exceptions import OpenRouterValidationError

if TYPE_CHECKING:
    from collections.abc import Callable

LIMIT_RESETS: Final[tuple[str, ...]] = ("daily", "weekly", "monthly")
USAGE_WINDOWS: Final[tuple[str, ...]] = ("daily", "weekly", "monthly", "lifetime")
#: What a create does when a key already carries the name: the one declaration of the modes.
IfExists = Literal["fail", "reuse", "replace"]
IF_EXISTS: Final[tuple[IfExists, ...]] = get_args(IfExists)
SENSOR_MODES: Final[tuple[str, ...]] = ("poke", "reschedule")
#: Longest key name accepted. OpenRouter publishes no maximum; names are labels shown in its dashboard, and a
#: longer one is a bug (a whole document rendered into a template), not a name.
NAME_MAX_LENGTH: Final = 255
#: What the provisioning sequence writes into the name of a key it created but has not delivered yet
#: (``<name> [pending delivery <token> until <epoch>]``): no name a user asks for may carry it.
CLAIM_MARKER: Final = "[pending delivery"
#: What an old key's name carries between a replace taking it out of its name and deleting it.
REPLACED_MARKER: Final = "[replaced "
#: Largest spending limit or USD threshold accepted: far above any account's credit, so a larger number is a
#: typo (an extra exponent), and well inside what a JSON number carries to the cent.
LIMIT_MAX_USD: Final = 1_000_000_000.0
#: Bounds of a claim's lease, in seconds: shorter leaves no time to deliver (delivery must end within half of
#: it), and longer keeps a killed run's undelivered key on the account for more than a day.
CLAIM_LEASE_MIN: Final = 2.0
CLAIM_LEASE_MAX: Final = 86400.0
#: Shortest poll interval of the sensor and the trigger, in seconds. Sub-second polls are for tests against
#: the local OpenRouter; anything shorter (0, or a NaN) would poll in a tight loop.
MIN_POLL_INTERVAL: Final = 0.05
#: Longest interval or timeout accepted, in seconds (ten years): longer ones overflow date arithmetic.
MAX_SECONDS: Final = 10 * 365 * 86400.0
#: Airflow's limit on the length of a Variable's key and a connection id (``ID_LEN``).
AIRFLOW_ID_MAX_LENGTH: Final = 250

_TEMPLATE_MARKERS: Final = ("{{", "{%", "{#")
_HASH_RE: Final = re.compile(r"[0-9a-f]{64}")
_CONN_ID_RE: Final = re.compile(r"[\w.\-]+")
_INTEGER_RE: Final = re.compile(r"[+-]?\d+")
# Categories no name or header value may hold: control characters (line breaks, NUL, tabs), unpaired
# surrogates (not encodable) and the Unicode line and paragraph separators.
_FORBIDDEN_CATEGORIES: Final = frozenset({"Cc", "Cs", "Zl", "Zp"})
_EMPTY: Final = "must not be empty; an empty value never means 'none': pass None to clear it or leave it out"
_UTC: Final = dt.timezone.utc


def fail(field: str, problem: str) -> NoReturn:
    raise OpenRouterValidationError(field, problem)


# ------------------------------------------------------------------------------------------- templates ---


def is_template(value: Any) -> bool:
    """Whether ``value`` is a string Jinja will render (an expression, a statement or a comment)."""
    return isinstance(value, str) and any(marker in value for marker in _TEMPLATE_MARKERS)


def is_literal(value: Any) -> bool:
    """Whether a value is known when the DAG file is parsed: not a template, not an upstream's output (an
    ``XComArg`` or a mapped argument), which are checked once resolved and rendered."""
    if isinstance(value, str):
        return not is_template(value)
    return not hasattr(value, "resolve") or isinstance(value, (int, float, dt.datetime, dt.timedelta))


def rendered_none(value: Any) -> Any:
    """A templated field's value with the text ``None`` read as ``None``.

    Without ``render_template_as_native_obj`` Jinja prints Python's ``None`` as ``"None"``: that exact text is
    the one way a template clears a value then. Nothing else (``""``, ``"null"``) is read as ``None``.
    """
    return None if value == "None" else value


# ---------------------------------------------------------------------------------------------- text ---


def _string(value: Any, field: str, what: str) -> str:
    if not isinstance(value, str):
        fail(field, f"must be {what} (got {type(value).__name__})")
    return value


def _forbidden_character(text: str) -> str | None:
    if text.isprintable():  # no Cc, Cs, Zl or Zp character is printable
        return None
    for position, char in enumerate(text):
        if unicodedata.category(char) in _FORBIDDEN_CATEGORIES:
            return f"U+{ord(char):04X} at position {position}"
    return None


def check_text(value: str, *, field: str, max_length: int, what: str = "it") -> str:
    """A non-blank single-line string of at most ``max_length`` characters that is not an API key."""
    if not value.strip():
        fail(field, _EMPTY)
    if len(value) > max_length:
        fail(field, f"must be at most {max_length} characters (got {len(value)})")
    found = _forbidden_character(value)
    if found is not None:
        fail(field, f"must not contain control characters or line breaks (found {found})")
    if looks_like_key(value):
        fail(
            field,
            f"looks like an OpenRouter API key; {what} is shown in logs and the UI, so a key never belongs "
            "here (the management key goes in the connection's password field)",
        )
    return value


def validate_name(value: Any, *, field: str = "name") -> str:
    """A key's name: not blank, at most :data:`NAME_MAX_LENGTH` characters, no control characters."""
    return check_text(
        _string(value, field, "a string"), field=field, max_length=NAME_MAX_LENGTH, what="a key's name"
    )


def validate_provisioned_name(value: Any, *, field: str = "name") -> str:
    """The name of a key the operators create and deliver: a key's name (:func:`validate_name`) that carries
    neither :data:`CLAIM_MARKER` nor :data:`REPLACED_MARKER`. Keys named so are provisional: the provisioning
    sequence deletes them (a claim nobody delivered, once its lease has passed; an old key a replace took out
    of its name, at the next run of that name)."""
    name = validate_name(value, field=field)
    if CLAIM_MARKER in name:
        fail(
            field,
            f"must not contain {CLAIM_MARKER!r}: that marks a provisional key not yet delivered, and such "
            "keys are deleted once their lease has passed",
        )
    if REPLACED_MARKER in name:
        fail(
            field,
            f"must not contain {REPLACED_MARKER!r}: that marks an old key a replace took out of its name, "
            "and such keys are deleted by the next run of that name",
        )
    return name


def validate_target(key_hash: Any, key_name: Any, *, rendered: bool) -> tuple[str | None, str | None]:
    """Exactly one of ``key_hash`` / ``key_name``, each checked when literal (all of them once rendered)."""
    if rendered:
        key_hash, key_name = rendered_none(key_hash), rendered_none(key_name)
    if (key_hash is None) == (key_name is None):
        fail(
            "key_hash, key_name",
            "give exactly one: the key's hash or its exact name"
            + (" (got both)" if key_hash is not None else " (got neither)"),
        )
    if key_hash is not None and (rendered or is_literal(key_hash)):
        return validate_key_hash(key_hash), None
    if key_name is not None and (rendered or is_literal(key_name)):
        return None, validate_name(key_name, field="key_name")
    return None, None


def validate_name_prefix(value: Any, *, field: str = "name_prefix") -> str:
    """The prefix of the key names a tenant sync owns: a non-blank single line."""
    if not isinstance(value, str) or not value.strip():
        fail(field, "required: a non-blank prefix the owned keys start with")
    return check_text(value, field=field, max_length=200)


def validate_creator_user_id(value: Any, *, field: str = "creator_user_id") -> str | None:
    if value is None:
        return None
    text = _string(value, field, "an OpenRouter user id or None")
    return check_text(text, field=field, max_length=NAME_MAX_LENGTH)


def validate_variable_name(value: Any, *, field: str = "deliver_to_variable") -> str | None:
    """The name of an Airflow Variable, or ``None``."""
    if value is None:
        return None
    text = _string(value, field, "the name of a Variable")
    return check_text(text, field=field, max_length=AIRFLOW_ID_MAX_LENGTH, what="a Variable's name")


def validate_conn_id(value: Any, *, field: str = "openrouter_conn_id") -> str:
    """An Airflow connection id: letters, digits, ``_``, ``.`` and ``-``, at most 250 characters."""
    text = _string(value, field, "a connection id")
    if not text:
        fail(field, _EMPTY)
    if looks_like_key(text):
        fail(field, "holds an API key, not a connection id: the key goes in the connection's password field")
    if len(text) > AIRFLOW_ID_MAX_LENGTH or not _CONN_ID_RE.fullmatch(text):
        fail(
            field,
            f"must be a connection id: up to {AIRFLOW_ID_MAX_LENGTH} letters, digits, '_', '.' or '-' "
            f"(got {quoted(text)})",
        )
    return text


def validate_one_of(value: Any, choices: tuple[str, ...], *, field: str, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if isinstance(value, str) and not value.strip():
        fail(field, _EMPTY)
    if not isinstance(value, str) or value not in choices:
        allowed = ", ".join(choices) + (" or None" if optional else "")
        fail(field, f"must be one of {allowed} (got {quoted(value)})")
    return value


def validate_limit_reset(value: Any, *, field: str = "limit_reset") -> str | None:
    """``"daily"``, ``"weekly"``, ``"monthly"``, or ``None`` for never."""
    result: str | None = validate_one_of(value, LIMIT_RESETS, field=field, optional=True)
    return result


def validate_usage_window(value: Any, *, field: str = "usage_window") -> str:
    result: str = validate_one_of(value, USAGE_WINDOWS, field=field)
    return result


def validate_header_text(value: Any, *, field: str, max_length: int = 1000) -> str:
    """A value sent as an HTTP header: one line of Latin-1, not an API key."""
    text = check_text(_string(value, field, "a string"), field=field, max_length=max_length).strip()
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        fail(field, "is sent as an HTTP header and may only hold Latin-1 characters")
    return text


# ------------------------------------------------------------------------------------------ booleans ---


def validate_bool(value: Any, *, field: str, text: bool = False) -> bool:
    """``True`` or ``False``; with ``text``, also the strings a template renders them to (``"True"``)."""
    if isinstance(value, bool):
        return value
    if text and isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if isinstance(value, str) and not value.strip():
        fail(field, _EMPTY)
    fail(field, f"must be True or False (got {quoted(value)})")


# ------------------------------------------------------------------------------------------- numbers ---


def _number(value: Any, field: str, what: str) -> float:
    """A finite float from a number or a numeric string; ``what`` completes "must be ..."."""
    if isinstance(value, bool):
        fail(field, f"must be {what} (got {value!r})")
    if isinstance(value, str):
        if not value.strip():
            fail(field, _EMPTY)
        try:
            number = float(value.strip())
        except ValueError:
            fail(field, f"must be {what} (got {quoted(value)})")
    elif isinstance(value, (int, float)) or hasattr(type(value), "__float__"):
        try:
            number = float(value)
        except (OverflowError, ValueError, TypeError):
            fail(field, f"must be {what}, and this one is out of range")
    else:
        fail(field, f"must be {what} (got {type(value).__name__})")
    if not math.isfinite(number):
        fail(field, f"must be {what}, a finite one (got {quoted(value)})")
    return number


def _number_or_none(
    value: Any, field: str, what: str, problem: Callable[[float, str], str | None]
) -> float | None:
    """``None``, or the finite number ``value`` stands for (numeric strings too) when ``problem`` finds it in
    range; otherwise ``problem``'s words, told the number and the value as given, name the fault."""
    if value is None:
        return None
    number = _number(value, field, what)
    wrong = problem(number, quoted(value))
    if wrong is not None:
        fail(field, wrong)
    return number


def _usd_problem(number: float, got: str) -> str | None:
    if number < 0:
        return f"must be >= 0 (got {got})"
    if number > LIMIT_MAX_USD:
        return f"must be at most {LIMIT_MAX_USD:,.0f} USD (got {got})"
    return None


def _fraction_problem(number: float, got: str) -> str | None:
    if 0 < number <= 1:
        return None
    hint = f"; for {number:g} % write {number / 100:g}" if 1 < number <= 100 else ""
    return f"must be a ratio above 0 and at most 1, e.g. 0.8 for 80 % (got {got}{hint})"


def validate_limit(value: Any, *, field: str = "limit") -> float | None:
    """A USD amount from 0 to :data:`LIMIT_MAX_USD`, or ``None``. Numeric strings (rendered templates) too."""
    return _number_or_none(value, field, "a number of USD or None", _usd_problem)


def validate_fraction(value: Any, *, field: str = "limit_fraction_at_least") -> float | None:
    """A ratio of the limit in (0, 1]: ``0.8`` means 80 %. Numeric strings (rendered templates) too."""
    return _number_or_none(value, field, "a ratio above 0 and at most 1, e.g. 0.8", _fraction_problem)


def validate_seconds(
    value: Any,
    *,
    field: str,
    minimum: float = 0.0,
    above_minimum: bool = False,
    maximum: float = MAX_SECONDS,
) -> float:
    """A duration in seconds (a number, a numeric string or a ``timedelta``), finite, within the bounds."""
    if isinstance(value, dt.timedelta):
        number = value.total_seconds()
    else:
        number = _number(value, field, "a number of seconds or a timedelta")
    if number < minimum or (above_minimum and number == minimum):
        fail(
            field,
            f"must be {'more than' if above_minimum else 'at least'} {minimum:g} s (got {quoted(value)})",
        )
    if number > maximum:
        fail(field, f"must be at most {maximum:g} s (got {quoted(value)})")
    return number


def validate_claim_lease(value: Any, *, field: str = "claim_lease") -> float:
    """How long a creating task holds its provisional key: a number of seconds or a ``timedelta``, from
    :data:`CLAIM_LEASE_MIN` to :data:`CLAIM_LEASE_MAX`."""
    seconds = value.total_seconds() if isinstance(value, dt.timedelta) else value
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float))
        or not CLAIM_LEASE_MIN <= seconds <= CLAIM_LEASE_MAX
    ):
        fail(field, f"must be between {CLAIM_LEASE_MIN:g} seconds and a day (got {quoted(value)})")
    return float(seconds)


def validate_destructive_cap(value: Any, *, field: str = "max_destructive") -> float:
    """The most disables and deletes one sync may make: a whole number, or a fraction (below 1) of the keys
    it owns."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        fail(field, f"must be a count or a fraction >= 0 (got {quoted(value)})")
    if isinstance(value, float) and value >= 1 and not value.is_integer():
        fail(field, "a fraction must be below 1; a count a whole number")
    return value


def validate_poll_interval(value: Any, *, field: str) -> float:
    return validate_seconds(value, field=field, minimum=MIN_POLL_INTERVAL)


def validate_int(value: Any, *, field: str, minimum: int = 0, maximum: int | None = None) -> int:
    """A whole number within the bounds; also a float without a fraction or a string of digits."""
    number: int | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and _INTEGER_RE.fullmatch(value.strip()) and len(value.strip()) < 20:
        number = int(value.strip())
    if number is None:
        if isinstance(value, str) and not value.strip():
            fail(field, _EMPTY)
        fail(field, f"must be a whole number (got {quoted(value)})")
    if number < minimum or (maximum is not None and number > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f"{minimum} or more"
        fail(field, f"must be {bounds} (got {quoted(value)})")
    return number


# ------------------------------------------------------------------------------------------ identifiers ---


def validate_key_hash(value: Any, *, field: str = "key_hash") -> str:
    """A key's hash: 64 lower-case hex characters (the ``hash`` OpenRouter reports, not the key itself)."""
    if isinstance(value, str) and looks_like_key(value):
        fail(
            field,
            "holds an API key itself, not its hash; use the key's 'hash' (64 hex characters), which "
            "CreateApiKeyOperator returns and OpenRouter's key list shows",
        )
    if isinstance(value, str) and not value.strip():
        fail(field, _EMPTY)
    if not isinstance(value, str) or not _HASH_RE.fullmatch(value):
        fail(field, f"must be a key hash: 64 lower-case hex characters (got {quoted(value)})")
    return value


def validate_workspace_id(value: Any, *, field: str = "workspace_id", optional: bool = True) -> str | None:
    """A workspace UUID in any spelling :class:`uuid.UUID` reads, returned canonical (lower case, hyphens)."""
    if value is None:
        if optional:
            return None
        fail(field, "must be the UUID of the workspace to move the key to (got None)")
    if isinstance(value, uuid.UUID):
        return str(value)
    text = _string(value, field, "a workspace UUID")
    if not text.strip():
        fail(field, _EMPTY)
    try:
        return str(uuid.UUID(text.strip()))
    except ValueError:
        fail(field, f"must be a UUID such as 0df9e665-d932-5740-b2c7-b52af166bc11 (got {quoted(value)})")


# ------------------------------------------------------------------------------------------- instants ---


def _from_iso(text: str) -> dt.datetime:
    text = text.strip()
    # Python < 3.11 does not read a "Z" suffix.
    return dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)


def parse_instant(value: str) -> dt.datetime | None:
    """An instant OpenRouter reported, read leniently (no offset means UTC); ``None`` when unreadable.

    The one reader of OpenRouter's timestamps. ``pendulum`` reads every ISO 8601 form the API is known to
    send (``Z``, ``+00:00``, fractions of any length such as ``27.36324``), which ``datetime.fromisoformat``
    does only from Python 3.11.
    """
    import pendulum

    try:
        moment = pendulum.parse(value.strip(), tz="UTC")
    except (ValueError, TypeError):  # pendulum's ParserError is a ValueError
        return None
    if not isinstance(moment, dt.datetime):  # a time or a duration is no instant
        return None
    utc = moment.in_timezone("UTC")
    # A plain datetime, as every other instant of the provider is (pendulum's prints and compares otherwise).
    return dt.datetime(
        utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond, tzinfo=_UTC
    )


def validate_instant(value: Any, *, field: str) -> dt.datetime:
    """A timezone-aware moment (a ``datetime``, pendulum's included, or an ISO 8601 string with an offset), in
    UTC."""
    if isinstance(value, str):
        if not value.strip():
            fail(field, _EMPTY)
        try:
            moment = _from_iso(value)
        except ValueError:
            fail(
                field,
                "must be an ISO 8601 date-time with a timezone, e.g. 2027-12-31T23:59:59Z "
                f"(got {quoted(value)})",
            )
    elif isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, dt.date):
        fail(field, f"must be a date and time with a timezone, not a date alone (got {quoted(value)})")
    else:
        fail(field, f"must be a datetime or an ISO 8601 string (got {type(value).__name__})")
    if moment.tzinfo is None or moment.utcoffset() is None:
        fail(field, f"must be timezone-aware; add a UTC offset such as Z or +00:00 (got {quoted(value)})")
    try:
        return moment.astimezone(_UTC)
    except (OverflowError, ValueError):
        fail(field, f"must lie between the years 1 and 9999 in UTC (got {quoted(value)})")


def wire_instant(moment: dt.datetime) -> str:
    """The form OpenRouter demands: UTC, whole seconds, ``Z``."""
    return moment.astimezone(_UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def validate_expires_at(
    value: Any, *, field: str = "expires_at", now: dt.datetime | None = None
) -> str | None:
    """A moment in the future, returned in the wire format (UTC, whole seconds), or ``None`` for never.

    Sub-second precision is dropped, since the API accepts whole seconds only.
    """
    if value is None:
        return None
    utc = validate_instant(value, field=field).replace(microsecond=0)
    current = now or dt.datetime.now(_UTC)
    if utc <= current:
        fail(field, f"must be in the future (got {wire_instant(utc)}, now is {wire_instant(current)})")
    return wire_instant(utc)
