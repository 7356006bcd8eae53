"""A careful Twilio Media Streams <-> OpenAI Realtime bridge, standalone (asyncio + websockets only).

Written the way public samples are, to test callsim against a bridge it never saw. Each flag adds
exactly one defect or design difference, so each run is a clean negative (or neutral) control:
--truncate timestamps|coarse, --leak, --open-openai-first, --drop-until-open, --beta, --no-tools,
--no-greeting. Keypresses are ignored (as most samples do) unless --dtmf-text TEMPLATE, which tells
the model of each one as a user text item worded by TEMPLATE ("User dialed digit {digit}") and asks
for a response; --greeting TEXT replaces the greeting instruction. --hangup-tool NAME declares a
hang-up tool of that name (a required "why" argument) and closes Twilio's socket once the goodbye
that follows it has played (every mark echoed). Two more end the call over Twilio's REST API once the Nth reply has been heard whole
(every mark echoed), as an end_call or transfer tool does: --rest-hangup-after N (calls(sid).update(
status="completed")) and --rest-transfer-after N --transfer-to E164 (update(twiml=<Say>…<Dial>)); the
API is $TWILIO_API_URL (default Twilio's) with $TWILIO_ACCOUNT_SID/$TWILIO_AUTH_TOKEN.
Usage: python careful.py [flags] --port PORT --openai-url ws://HOST:PORT/v1/realtime
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import signal
import sys
import time
from collections import OrderedDict
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

log = logging.getLogger("careful")
BYTES_PER_MS = 8  # mu-law 8 kHz: Twilio plays 8 bytes per ms
COARSE_BYTES = 400 * BYTES_PER_MS
WEATHER_TOOL = {"type": "function", "name": "get_weather", "description": "Current weather in a city.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
GREETING = "Greet the caller and ask how you can help."
TURN = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500,
        "create_response": True, "interrupt_response": True}
PREWARMED: dict[ServerConnection, ClientConnection] = {}  # --open-openai-first: caller -> its OpenAI socket
CALLS: set["Call"] = set()


class Item:
    """One assistant item's audio: where it starts in Twilio's play queue, how much was forwarded."""

    def __init__(self, item_id: str, start: int, first_ts: int) -> None:
        self.id, self.start, self.bytes, self.first_ts = item_id, start, 0, first_ts


class Call:
    def __init__(self, twilio: ServerConnection, opts: argparse.Namespace) -> None:
        self.tw, self.o = twilio, opts
        self.oa: ClientConnection | None = PREWARMED.pop(twilio, None)
        self.oa_task: asyncio.Task[None] | None = None
        self.opening: asyncio.Task[None] | None = None
        self.ready = self.oa is not None
        self.sid: str | None = None
        self.started = asyncio.Event()
        self.latest_ts = 0
        self.forwarded = 0  # bytes sent to Twilio over the whole call (its play queue is one FIFO)
        self.anchor = (0, time.monotonic())  # (play position known, when): last echo, or start from idle
        self.pending: OrderedDict[str, int] = OrderedDict()  # unechoed mark name -> queue position
        self.last_mark_pos, self.n_marks, self.dropped = 0, 0, 0
        self.items: dict[str, Item] = {}
        self.ignored: set[str] = set()
        self.answered: set[str] = set()
        self.owe_reply = False  # a function output was sent: ask for the spoken answer once the response ends
        self.call_sid: str | None = None
        self.replies_done = 0  # responses that sent audio and are done
        self.rest_sent = False
        self.hang_up_after = 0  # --hangup-tool: close the stream once this many replies have played

    async def open_openai(self) -> None:
        self.oa = await open_and_configure(self.o)
        self.ready = True
        self.oa_task = asyncio.create_task(self.from_openai())

    async def open_or_hang_up(self) -> None:
        try:
            await self.open_openai()
        except Exception as exc:
            log.error("%s: OpenAI connect failed: %r; hanging up", self.sid, exc)
            await self.tw.close()

    async def run(self) -> None:
        CALLS.add(self)
        try:
            if self.oa is not None:
                self.oa_task = asyncio.create_task(self.from_openai())
            elif not self.o.drop_until_open:
                await self.open_or_hang_up()
            await self.from_twilio()
        finally:
            await self.end()
            CALLS.discard(self)

    async def end(self) -> None:
        """Twilio is done: close OpenAI at once (unless --leak, which lets the session run on)."""
        if self.opening is not None and not self.opening.done():
            self.opening.cancel()
        if self.o.leak and self.oa_task is not None:
            log.info("%s: twilio ended; leaving the OpenAI session open (--leak)", self.sid)
            await asyncio.gather(self.oa_task, return_exceptions=True)
            return
        if self.oa is not None:
            await self.oa.close()
        if self.oa_task is not None:
            self.oa_task.cancel()
            await asyncio.gather(self.oa_task, return_exceptions=True)
        log.info("%s: call ended (%d early media frames dropped)", self.sid, self.dropped)

    async def from_twilio(self) -> None:
        try:
            async for raw in self.tw:
                try:
                    msg = json.loads(raw)
                    if await self.on_twilio(msg):
                        return
                except Exception as exc:  # a bad message must not end the call
                    log.warning("%s: bad Twilio message %.80r: %r", self.sid, raw, exc)
        except ConnectionClosed:
            pass

    async def on_twilio(self, msg: dict[str, Any]) -> bool:
        event = msg["event"]
        if event == "media":
            self.latest_ts = int(msg["media"]["timestamp"])
            if not self.ready:  # --drop-until-open: no OpenAI socket yet, the frame is lost
                self.dropped += 1
                if self.opening is None:
                    self.opening = asyncio.create_task(self.open_or_hang_up())
                return False
            await send(self.oa, {"type": "input_audio_buffer.append", "audio": msg["media"]["payload"]})
        elif event == "start":
            self.sid = msg["start"]["streamSid"]
            self.call_sid = msg["start"].get("callSid")
            self.started.set()
            log.info("%s: stream started", self.sid)
        elif event == "mark":
            self.on_mark(msg["mark"]["name"])
        elif event == "dtmf" and self.o.dtmf_text and self.ready:
            text = self.o.dtmf_text.format(digit=msg["dtmf"]["digit"])
            await send(self.oa, {"type": "conversation.item.create", "item": {
                "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}})
            await send(self.oa, {"type": "response.create"})
        elif event == "stop":
            log.info("%s: stop", self.sid)
            return True
        return False

    def on_mark(self, name: str) -> None:
        if name not in self.pending:
            return  # echoed by our clear: says nothing about playback
        while self.pending:
            n, pos = self.pending.popitem(last=False)
            if n == name:
                self.anchor = (pos, time.monotonic())
                break
        if not self.pending:
            self.maybe_end_over_rest()
            self.maybe_hang_up()

    def heard(self, now: float) -> int:
        """Queue position played by now: last echoed mark (+ elapsed time unless coarse), capped."""
        pos, t = self.anchor
        if self.o.truncate != "coarse":
            pos += int((now - t) * 1000 * BYTES_PER_MS)
        return min(pos, self.forwarded)

    async def from_openai(self) -> None:
        assert self.oa is not None
        await self.started.wait()
        try:
            async for raw in self.oa:
                try:
                    await self.on_openai(json.loads(raw))
                except Exception as exc:
                    log.warning("%s: bad OpenAI message %.80r: %r", self.sid, raw, exc)
        except ConnectionClosed as exc:
            log.info("%s: OpenAI socket dropped: %s", self.sid, exc)
        log.info("%s: OpenAI socket closed (%s)", self.sid, self.oa.close_code)
        if self.o.beta:
            return  # as the samples: log it, leave the caller on the line
        await self.tw.close()  # hang up: nothing left to talk to

    async def on_openai(self, ev: dict[str, Any]) -> None:
        t = ev["type"]
        if t in ("response.output_audio.delta", "response.audio.delta"):
            await self.on_delta(ev["item_id"], ev["delta"])
        elif t in ("response.output_audio.done", "response.audio.done") and self.o.truncate == "coarse":
            if self.forwarded > self.last_mark_pos and ev.get("item_id") not in self.ignored:
                await self.send_mark()
        elif t == "input_audio_buffer.speech_started":
            await self.barge_in()
        elif t == "response.function_call_arguments.done":
            await self.answer_tool(ev["call_id"], ev.get("arguments") or "{}", ev.get("name"))
        elif t == "response.done":  # only now may a new response be created
            if any(c.get("type") == "message" for c in ev["response"].get("output") or []):
                self.replies_done += 1
                self.maybe_end_over_rest()
                self.maybe_hang_up()
            for c in ev["response"].get("output") or []:
                if c.get("type") == "function_call":
                    await self.answer_tool(c["call_id"], c.get("arguments") or "{}", c.get("name"))
            if self.owe_reply:
                self.owe_reply = False
                await send(self.oa, {"type": "response.create"})
        elif t == "error":
            log.warning("%s: OpenAI error: %s", self.sid, ev.get("error"))

    async def on_delta(self, item_id: str, b64: str) -> None:
        if item_id in self.ignored:
            return  # a late delta of an interrupted item
        now = time.monotonic()
        if self.heard(now) >= self.forwarded and self.o.truncate != "coarse":
            self.anchor = (self.forwarded, now)  # Twilio's queue ran dry: this audio starts playing now
        item = self.items.get(item_id)
        if item is None:
            item = self.items[item_id] = Item(item_id, self.forwarded, self.latest_ts)
        n = len(base64.b64decode(b64))
        item.bytes += n
        self.forwarded += n
        await send(self.tw, {"event": "media", "streamSid": self.sid, "media": {"payload": b64}})
        if self.o.truncate != "coarse" or self.forwarded - self.last_mark_pos >= COARSE_BYTES:
            await self.send_mark()

    async def send_mark(self) -> None:
        self.n_marks += 1
        name = f"m{self.n_marks}"
        self.pending[name] = self.last_mark_pos = self.forwarded
        await send(self.tw, {"event": "mark", "streamSid": self.sid, "mark": {"name": name}})

    def maybe_end_over_rest(self) -> None:
        """After the Nth reply, once it has all played (no mark pending): hang up or transfer over REST."""
        after = self.o.rest_hangup_after or self.o.rest_transfer_after
        if not after or self.rest_sent or self.replies_done < after or self.pending or not self.call_sid:
            return
        self.rest_sent = True
        asyncio.ensure_future(self.end_over_rest())

    def maybe_hang_up(self) -> None:
        """--hangup-tool: once the goodbye after the tool call has played (no mark pending), end the stream."""
        if self.hang_up_after and self.replies_done >= self.hang_up_after and not self.pending:
            self.hang_up_after = 0
            log.info("%s: goodbye played; closing the stream", self.sid)
            asyncio.ensure_future(self.tw.close())

    async def end_over_rest(self) -> None:
        from twilio.rest import Client

        client = Client(os.environ["TWILIO_ACCOUNT_SID"], os.environ["TWILIO_AUTH_TOKEN"])
        client.api.base_url = os.environ.get("TWILIO_API_URL", "https://api.twilio.com")
        if self.o.rest_transfer_after:
            twiml = (f"<Response><Say>Transferring you now.</Say><Dial><Number>{self.o.transfer_to}</Number>"
                     f"</Dial></Response>")
            what, update = "transfer", lambda: client.calls(self.call_sid).update(twiml=twiml)
        else:
            what, update = "hang-up", lambda: client.calls(self.call_sid).update(status="completed")
        try:
            call = await asyncio.to_thread(update)
            log.info("%s: REST %s of %s: %s", self.sid, what, self.call_sid, call.status)
        except Exception as exc:
            log.error("%s: REST %s of %s failed: %r", self.sid, what, self.call_sid, exc)

    async def barge_in(self) -> None:
        if not self.pending:
            return  # nothing playing: nothing to clear or truncate
        now = time.monotonic()
        played = self.heard(now)  # before clear: marks echoed by clear are not playback
        playing = [i for i in self.items.values() if i.id not in self.ignored and i.start + i.bytes > played]
        await send(self.tw, {"event": "clear", "streamSid": self.sid})
        self.pending.clear()
        self.anchor = (self.forwarded, now)
        self.last_mark_pos = self.forwarded
        if not playing:
            return
        item = playing[0]
        if self.o.truncate == "timestamps":  # the samples' way: media clock since the item's first delta
            end_ms = self.latest_ts - item.first_ts
        else:
            end_ms = max(0, min(played - item.start, item.bytes)) // BYTES_PER_MS
        self.ignored.update(i.id for i in playing)
        log.info("%s: barge-in: truncate %s at %d ms", self.sid, item.id, end_ms)
        await send(self.oa, {"type": "conversation.item.truncate", "item_id": item.id,
                              "content_index": 0, "audio_end_ms": end_ms})

    async def answer_tool(self, call_id: str, arguments: str, name: str | None = None) -> None:
        if call_id in self.answered:
            return
        self.answered.add(call_id)
        self.owe_reply = True
        if self.o.hangup_tool and name == self.o.hangup_tool:
            why = json.loads(arguments).get("why")
            if not isinstance(why, str):
                log.error("%s: %s called without its required 'why': %s", self.sid, name, arguments)
                output = json.dumps({"error": "missing why"})
            else:
                self.hang_up_after = self.replies_done + 1  # the goodbye that the output asks for
                output = json.dumps({"ok": True})
            await send(self.oa, {"type": "conversation.item.create",
                                 "item": {"type": "function_call_output", "call_id": call_id, "output": output}})
            return
        city = json.loads(arguments).get("city", "somewhere")
        output = json.dumps({"city": city, "temperature_c": 21, "conditions": "sunny"})
        await send(self.oa, {"type": "conversation.item.create",
                              "item": {"type": "function_call_output", "call_id": call_id, "output": output}})


async def send(ws: ServerConnection | ClientConnection | None, msg: dict[str, Any]) -> None:
    """Send, or drop the message if that side is gone (the lifecycle code decides what ends a call)."""
    try:
        if ws is not None:
            await ws.send(json.dumps(msg))
    except ConnectionClosed:
        log.debug("dropped %s: socket closed", msg.get("type") or msg.get("event"))


def session_update(o: argparse.Namespace) -> dict[str, Any]:
    instructions = "You are a helpful phone assistant. Keep answers short."
    hang_up = [{"type": "function", "name": o.hangup_tool, "description": "Hang up once you have said goodbye.",
                "parameters": {"type": "object", "properties": {"why": {"type": "string"}}, "required": ["why"]}}
               ] if o.hangup_tool else []
    tools = {} if o.no_tools else {"tools": [WEATHER_TOOL, *hang_up], "tool_choice": "auto"}
    if o.beta:
        return {"type": "session.update", "session": {
            "modalities": ["text", "audio"], "instructions": instructions, "voice": "alloy",
            "input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw",
            "input_audio_transcription": {"model": "whisper-1"}, "turn_detection": TURN, **tools}}
    return {"type": "session.update", "session": {
        "type": "realtime", "model": "gpt-realtime", "output_modalities": ["audio"], "instructions": instructions,
        "audio": {"input": {"format": {"type": "audio/pcmu"}, "transcription": {"model": "gpt-4o-mini-transcribe"},
                            "turn_detection": TURN},
                  "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"}}, **tools}}


async def open_and_configure(o: argparse.Namespace) -> ClientConnection:
    headers = {"Authorization": f"Bearer {os.environ.get('OPENAI_API_KEY', 'sk-callsim-mock')}"}
    if o.beta:
        headers["OpenAI-Beta"] = "realtime=v1"
    ws = await connect(f"{o.openai_url}?model=gpt-realtime", additional_headers=headers, max_size=2**24)
    first = [session_update(o)]
    if not o.no_greeting:
        first += [{"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": o.greeting}]}},
            {"type": "response.create"}]
    try:
        for ev in first:
            await ws.send(json.dumps(ev))
    except ConnectionClosed as exc:  # refused mid-setup (e.g. the beta shape): the reader reports it
        log.warning("OpenAI closed during setup: %s", exc)
    return ws


def orphan_check(conn: ServerConnection) -> None:
    """Close a pre-warmed OpenAI socket whose caller never got to the handler."""
    if (ws := PREWARMED.pop(conn, None)) is not None:
        asyncio.ensure_future(ws.close())


async def main(o: argparse.Namespace) -> None:
    async def process_request(conn: ServerConnection, request: Any) -> Any:
        if request.path.split("?")[0] != "/media-stream":
            return conn.respond(404, "not found\n")
        if o.open_openai_first:  # pre-warm: OpenAI is open before the caller's handshake is answered
            try:
                PREWARMED[conn] = await open_and_configure(o)
            except Exception as exc:
                log.error("OpenAI connect failed: %r", exc)
                return conn.respond(502, "upstream unavailable\n")
            asyncio.get_running_loop().call_later(10, orphan_check, conn)  # the handshake may still fail
            await asyncio.sleep(0.2)
        return None

    async def handler(conn: ServerConnection) -> None:
        await Call(conn, o).run()

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with serve(handler, "127.0.0.1", o.port, process_request=process_request, max_size=2**24) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"listening ws://127.0.0.1:{port}/media-stream", flush=True)
        await stop.wait()
        for call in list(CALLS):  # leaked sessions end with the process
            if call.oa is not None:
                await call.oa.close()
    log.info("stopped")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--openai-url", required=True)
    p.add_argument("--truncate", choices=("marks", "timestamps", "coarse"), default="marks")
    for flag in ("--leak", "--open-openai-first", "--drop-until-open", "--beta", "--no-tools", "--no-greeting"):
        p.add_argument(flag, action="store_true")
    p.add_argument("--rest-hangup-after", type=int, default=0, metavar="N")
    p.add_argument("--rest-transfer-after", type=int, default=0, metavar="N")
    p.add_argument("--transfer-to", default="+15550009999")
    p.add_argument("--dtmf-text", default="", metavar="TEMPLATE")
    p.add_argument("--greeting", default=GREETING)
    p.add_argument("--hangup-tool", default="", metavar="NAME")
    return p.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s careful %(message)s")
    asyncio.run(main(parse_args()))
