"""``callsim dial --record``: the call's dual-channel recording, fetched over REST into the report.

Twilio makes a recording available some seconds after the call ends (``status`` ``processing``
first, then ``completed``), so :func:`fetch_recording` polls ``client.recordings.list(call_sid=…)``
for up to :data:`RECORDING_WAIT_S` and downloads the ``.wav`` (``media_url`` + ``.wav``, with the
account's credentials, which Twilio accepts whether or not the account enforces HTTP auth on
media). What came, or why nothing did, goes into report.json's ``dial.recording``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: how long to wait for the recording after the call ended (Twilio's take seconds)
RECORDING_WAIT_S = 60.0
POLL_S = 1.0
DOWNLOAD_TIMEOUT_S = 30.0
FILE_NAME = "recording.wav"


def fetch_recording(client: Any, account: tuple[str, str], call_sid: str, report_dir: Path, *,
                    wait_s: float = RECORDING_WAIT_S, say: Callable[[str], None] = lambda line: None,
                    sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Poll for the call's completed recording, save it as ``report_dir/recording.wav``; the
    ``dial.recording`` entry (``sid``, ``duration_s``, ``channels``, ``file``), or ``missing`` and
    why. ``client``: the ``twilio`` package's client (its base URL already set)."""
    import requests
    from twilio.base.exceptions import TwilioException

    deadline = time.monotonic() + wait_s
    last = "no recording listed"
    while True:
        try:
            done = [r for r in client.recordings.list(call_sid=call_sid) if r.status == "completed"]
        except (TwilioException, requests.RequestException) as exc:
            done, last = [], f"listing recordings failed: {exc}"
        if done:
            break
        if time.monotonic() >= deadline:
            say(f"no recording of {call_sid} within {wait_s:g} s ({last})")
            return {"missing": f"no completed recording of {call_sid} within {wait_s:g} s of the call's end ({last})"}
        sleep(POLL_S)
    rec = done[0]
    url = f"{rec.media_url}.wav"
    try:
        resp = requests.get(url, auth=account, timeout=DOWNLOAD_TIMEOUT_S)
        resp.raise_for_status()
    except requests.RequestException as exc:
        say(f"recording {rec.sid}: download failed: {exc}")
        return {"sid": rec.sid, "missing": f"download of {url} failed: {exc}"}
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / FILE_NAME).write_bytes(resp.content)
    entry = {"sid": rec.sid, "duration_s": int(rec.duration) if rec.duration else None,
             "channels": rec.channels, "file": FILE_NAME}
    say(f"recording {rec.sid} ({entry['duration_s']} s, {rec.channels} channel(s)): {report_dir / FILE_NAME}")
    return entry


def attach_to_report(report_dir: Path, entry: dict[str, Any]) -> None:
    """Put ``entry`` into report.json's ``meta.dial.recording`` (the report is written before the
    hang-up; the recording exists only after it)."""
    path = report_dir / "report.json"
    if not path.exists():
        return
    import orjson

    data = orjson.loads(path.read_bytes())
    data.setdefault("meta", {}).setdefault("dial", {})["recording"] = entry
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
