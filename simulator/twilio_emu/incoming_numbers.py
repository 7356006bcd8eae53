"""Twilio's REST ``IncomingPhoneNumbers`` resource over the emulated account's numbers, sans-IO.

The numbers are the ones the emulator was started with (``--number +1555…=URL``); each gets a
``PN…`` SID derived from the account and the number, so the same emulator command gives the same
SIDs every run (a script can keep one). Served (protocols.md PART 4 C):

* ``GET /2010-04-01/Accounts/{AccountSid}/IncomingPhoneNumbers.json``: a page, in the order the
  numbers were given, under ``incoming_phone_numbers`` with the paging envelope of ``Calls``;
  filters ``PhoneNumber`` (partial, ``*`` = any digit) and ``FriendlyName`` (exact); ``Beta`` and
  ``Origin`` are accepted and not applied.
* ``GET …/IncomingPhoneNumbers/{Sid}.json``: fetch; ``POST`` the same: update ``VoiceUrl``,
  ``VoiceMethod``, ``VoiceFallbackUrl``, ``VoiceFallbackMethod``, ``StatusCallback``,
  ``StatusCallbackMethod``, ``FriendlyName``. An unknown SID is 20404.

A new ``VoiceUrl``/``VoiceMethod`` replaces the :class:`~.numbers.PhoneNumber` in the account's
``numbers`` mapping (the one :class:`~.rest.RestCore` holds), so a call placed to that number
afterwards goes to the new webhook, as on Twilio.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from . import errors
from .errors import TwilioError
from .form import API_VERSION, check_url, formatted, page, rfc2822
from .form import method as form_method
from .numbers import PhoneNumber

LIST_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)/IncomingPhoneNumbers\.json$")
ONE_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)/IncomingPhoneNumbers/(?P<sid>[^/]+)\.json$")


def number_sid(account_sid: str, number: str) -> str:
    """``PN`` + 32 hex digits, the same for the same account and number."""
    return "PN" + hashlib.sha256(f"{account_sid}:{number}".encode()).hexdigest()[:32]


@dataclass(slots=True)
class NumberRecord:
    """What the resource shows of one number beyond its :class:`PhoneNumber` (which lives in the
    shared mapping, where the call legs read it)."""
    sid: str
    number: str
    friendly_name: str
    date_created: float
    date_updated: float
    voice_fallback_url: str | None = None
    voice_fallback_method: str = "POST"
    status_callback: str = ""
    status_callback_method: str = "POST"


class IncomingNumbers:
    """The resource for one account. ``numbers`` is the account's live mapping (number ->
    :class:`PhoneNumber`); it is updated in place."""

    def __init__(self, account_sid: str, numbers: dict[str, PhoneNumber], clock: Callable[[], float]) -> None:
        self.account_sid = account_sid
        self.numbers = numbers
        self.clock = clock
        now = clock()
        self.records: dict[str, NumberRecord] = {}
        for number in numbers:
            sid = number_sid(account_sid, number)
            self.records[sid] = NumberRecord(sid, number, formatted(number), now, now)

    def handle(self, method: str, path: str, query: list[tuple[str, str]],
               form: list[tuple[str, str]]) -> tuple[int, dict[str, Any]] | None:
        """(status, JSON) for a request on this resource, ``None`` for another path; a failed
        check raises :class:`TwilioError`. The account in the path was checked by the caller."""
        if LIST_PATH.match(path):
            if method != "GET":
                raise TwilioError(errors.METHOD_NOT_ALLOWED, f"Method {method} not allowed on {path}", 405)
            return 200, self.list_page(path, query)
        if m := ONE_PATH.match(path):
            record = self.records.get(m["sid"])
            if record is None:
                raise errors.not_found(path)
            if method == "GET":
                return 200, self.render(record)
            if method == "POST":
                return 200, self.render(self.update(record, form))
            raise TwilioError(errors.METHOD_NOT_ALLOWED, f"Method {method} not allowed on {path}", 405)
        return None

    # -- update, list ----------------------------------------------------------------------

    def update(self, record: NumberRecord, form: list[tuple[str, str]]) -> NumberRecord:
        f = dict(form)  # every field here is single-valued
        phone = self.numbers[record.number]
        url, method = f.get("VoiceUrl"), f.get("VoiceMethod")
        # every value is checked before anything changes: a failed update changes nothing
        if url:
            check_url(url, "VoiceUrl")
        for name in ("VoiceFallbackUrl", "StatusCallback"):
            if f.get(name):
                check_url(f[name], name)
        voice_method = form_method(method, "VoiceMethod", phone.voice_method)
        fallback_method = form_method(f.get("VoiceFallbackMethod"), "VoiceFallbackMethod", record.voice_fallback_method)
        callback_method = form_method(f.get("StatusCallbackMethod"), "StatusCallbackMethod",
                                  record.status_callback_method)
        if url is not None or method is not None:
            self.numbers[record.number] = replace(phone, voice_url=phone.voice_url if url is None else url,
                                                  voice_method=voice_method)
        if "VoiceFallbackUrl" in f:
            record.voice_fallback_url = f["VoiceFallbackUrl"] or None
        if "StatusCallback" in f:
            record.status_callback = f["StatusCallback"]
        if "FriendlyName" in f:
            record.friendly_name = f["FriendlyName"][:64] or formatted(record.number)
        record.voice_fallback_method = fallback_method
        record.status_callback_method = callback_method
        record.date_updated = self.clock()
        return record

    def list_page(self, path: str, query: list[tuple[str, str]]) -> dict[str, Any]:
        q = dict(query)
        want_number, want_name = q.get("PhoneNumber") or "", q.get("FriendlyName") or ""
        pattern = _number_pattern(want_number) if want_number else None
        records = [r for r in self.records.values()
                   if (pattern is None or pattern.search(r.number)) and (not want_name or r.friendly_name == want_name)]
        kept = [(k, v) for k, v in (("PhoneNumber", want_number), ("FriendlyName", want_name)) if v]
        return page(records, "incoming_phone_numbers", path, kept, q.get("PageSize"), q.get("Page"),
                    q.get("PageToken"), self.render)

    # -- rendering -------------------------------------------------------------------------

    def render(self, r: NumberRecord) -> dict[str, Any]:
        phone = self.numbers[r.number]
        base = f"/{API_VERSION}/Accounts/{self.account_sid}/IncomingPhoneNumbers/{r.sid}"
        return {
            "account_sid": self.account_sid,
            "address_requirements": "none",
            "address_sid": None,
            "api_version": API_VERSION,
            "beta": False,
            "bundle_sid": None,
            "capabilities": {"fax": False, "mms": False, "sms": False, "voice": True},
            "date_created": rfc2822(r.date_created),
            "date_updated": rfc2822(r.date_updated),
            "emergency_address_sid": None,
            "emergency_address_status": "unregistered",
            "emergency_status": "Inactive",
            "friendly_name": r.friendly_name,
            "identity_sid": None,
            "origin": "twilio",
            "phone_number": r.number,
            "sid": r.sid,
            "sms_application_sid": "",
            "sms_fallback_method": "POST",
            "sms_fallback_url": "",
            "sms_method": "POST",
            "sms_url": "",
            "status": "in-use",
            "status_callback": r.status_callback,
            "status_callback_method": r.status_callback_method,
            "subresource_uris": {"assigned_add_ons": f"{base}/AssignedAddOns.json"},
            "trunk_sid": None,
            "type": "local",
            "uri": f"{base}.json",
            "voice_application_sid": "",
            "voice_caller_id_lookup": False,
            "voice_fallback_method": r.voice_fallback_method,
            "voice_fallback_url": r.voice_fallback_url,
            "voice_method": phone.voice_method,
            "voice_receive_mode": "voice",
            "voice_url": phone.voice_url,
        }


def _number_pattern(text: str) -> re.Pattern[str]:
    """``PhoneNumber``: a part of the number, ``*`` standing for any digit."""
    kept = re.sub(r"[^0-9*+]", "", text)
    return re.compile("".join(r"\d" if c == "*" else re.escape(c) for c in kept))


