"""Drive a local OpenRouter running in another process through its ``/_local`` control endpoints."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import urllib.error
import urllib.request
from typing import Any

from airflow_provider_openrouter.testing._backend import RecordedRequest
from airflow_provider_openrouter.testing._controls import CONTROL_PREFIX
from airflow_provider_openrouter.testing._local import StateHelpers
from airflow_provider_openrouter.testing._records import iso
from airflow_provider_openrouter.testing.faults import API_PREFIX, FaultRule
from airflow_provider_openrouter.testing.realism import Realism

# The fake is on loopback: proxy settings from the environment must not reroute control calls.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class LocalOpenRouterControlError(RuntimeError):
    """A control request failed."""


class LocalOpenRouterControl(StateHelpers):
    """The helpers of :class:`LocalOpenRouter`, over HTTP.

    ``base_url`` is the fake's API base URL (``http://127.0.0.1:PORT/api/v1``) or its root URL.
    """

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        root = base_url.rstrip("/")
        if root.endswith(API_PREFIX):
            root = root[: -len(API_PREFIX)]
        self.root_url = root
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"LocalOpenRouterControl({self.root_url})"

    @property
    def base_url(self) -> str:
        return self.root_url + API_PREFIX

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.root_url + CONTROL_PREFIX + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"} if data is not None else {},
        )
        try:
            with _OPENER.open(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            with contextlib.suppress(ValueError, KeyError, TypeError):
                detail = json.loads(detail)["error"]["message"]
            raise LocalOpenRouterControlError(
                f"{method} {CONTROL_PREFIX}{path}: {exc.code} {detail}"
            ) from None

    # -- addresses -----------------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """``base_url``, ``management_key``, ``now`` and ``spend_per_second`` of the fake."""
        result: dict[str, Any] = self._call("GET", "/info")
        return result

    @property
    def management_key(self) -> str:
        return str(self.info()["management_key"])

    # -- state helpers -------------------------------------------------------------------------------------

    def _insert_key(self, options: dict[str, Any]) -> tuple[dict[str, Any], str]:
        result = self._call("POST", "/keys", {**options, "expires_at": iso(options["expires_at"])})
        return result["data"], result["key"]

    def add_usage(self, key_hash: str, usd: float, *, byok: bool = False) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/keys/{key_hash}/usage", {"usd": usd, "byok": byok})[
            "data"
        ]
        return result

    def set_usage(self, key_hash: str, **values: float | dt.datetime | str | None) -> dict[str, Any]:
        body = {name: iso(v) if isinstance(v, dt.datetime) else v for name, v in values.items()}
        result: dict[str, Any] = self._call("PUT", f"/keys/{key_hash}/usage", body)["data"]
        return result

    def set_spend_per_second(self, usd: float) -> None:
        self._call("PUT", "/spend", {"per_second": usd})

    def seed_keys(self, count: int, *, prefix: str = "filler-") -> int:
        return int(self._call("POST", "/seed", {"count": count, "prefix": prefix})["seeded"])

    # -- realism -------------------------------------------------------------------------------------------

    @property
    def realism(self) -> Realism:
        return Realism.from_json(self._call("GET", "/realism")["data"])

    def set_realism(self, realism: Realism) -> None:
        self._call("PUT", "/realism", realism.to_json())

    # -- clock ---------------------------------------------------------------------------------------------

    @property
    def now(self) -> dt.datetime:
        return _instant(self._call("GET", "/clock")["now"])

    def advance_clock(self, delta: dt.timedelta | float) -> dt.datetime:
        seconds = delta.total_seconds() if isinstance(delta, dt.timedelta) else float(delta)
        return _instant(self._call("POST", "/clock", {"advance_seconds": seconds})["now"])

    def set_clock(self, moment: dt.datetime, *, frozen: bool = False) -> dt.datetime:
        return _instant(self._call("POST", "/clock", {"set": moment.isoformat(), "frozen": frozen})["now"])

    # -- inspection ----------------------------------------------------------------------------------------

    def keys(self, *, include_management: bool = False) -> list[dict[str, Any]]:
        query = "?include_management=true" if include_management else ""
        result: list[dict[str, Any]] = self._call("GET", "/keys" + query)["data"]
        return result

    def listed_hashes(self) -> list[str]:
        return list(self._call("GET", "/listed")["data"])

    def get_key_state(self, key_hash: str) -> dict[str, Any]:
        try:
            result: dict[str, Any] = self._call("GET", f"/keys/{key_hash}")["data"]
        except LocalOpenRouterControlError as exc:
            if ": 404 " in str(exc):
                raise KeyError(key_hash) from None
            raise
        return result

    @property
    def requests(self) -> list[RecordedRequest]:
        return [RecordedRequest.from_json(item) for item in self._call("GET", "/requests")["data"]]

    def clear_requests(self) -> None:
        self._call("DELETE", "/requests")

    @property
    def issued_plaintexts(self) -> list[str]:
        return list(self._call("GET", "/issued-plaintexts")["data"])

    # -- faults --------------------------------------------------------------------------------------------

    def _arm(self, rule: FaultRule) -> None:
        self._call("POST", "/faults", rule.to_json())

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    @property
    def faults(self) -> list[FaultRule]:
        return [FaultRule.from_json(item) for item in self._call("GET", "/faults")["data"]]


def _instant(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
