"""A websockets-only port of the twilio-samples Python sample's media-stream handler (GA names).

Kept to the shape of twilio-samples/speech-assistant-openai-realtime-api-python ``main.py``:
two coroutines joined by ``asyncio.gather``, one mark "responsePart" per audio delta, barge-in
truncation from Twilio media timestamps (truncate first, then clear, only while marks are
pending), and its lifecycle quirks: the OpenAI socket is opened after the caller's handshake,
closed when the caller goes, and when OpenAI goes the caller is left on the line. The only
departures: FastAPI/uvicorn replaced by ``websockets``, prints by logging to stderr, and a bad
message is logged and skipped instead of ending that direction. Standalone: imports nothing
from this repository.
Usage: python sample_python.py [--greet] --port PORT --openai-url ws://HOST:PORT/v1/realtime
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
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

log = logging.getLogger("sample_python")
OPENAI_API_KEY = os.environ.get("OPENAI_API_KEY", "sk-callsim-mock")
TEMPERATURE = 0.8
VOICE = "alloy"
SYSTEM_MESSAGE = "You are a helpful and bubbly AI assistant who loves to chat about anything the user is interested in."
LOG_EVENT_TYPES = ["error", "response.content.done", "rate_limits.updated", "response.done",
                   "input_audio_buffer.committed", "input_audio_buffer.speech_stopped",
                   "input_audio_buffer.speech_started", "session.created", "session.updated"]


async def handle_media_stream(websocket: ServerConnection, opts: argparse.Namespace) -> None:
    """One call: Twilio on ``websocket``, OpenAI on a socket opened now (after the handshake)."""
    log.info("Client connected")
    async with connect(f"{opts.openai_url}?model=gpt-realtime&temperature={TEMPERATURE}&voice={VOICE}",
                       additional_headers={"Authorization": f"Bearer {OPENAI_API_KEY}"},
                       max_size=2**24) as openai_ws:
        await initialize_session(openai_ws, opts.greet)

        stream_sid: str | None = None
        latest_media_timestamp = 0
        last_assistant_item: str | None = None
        mark_queue: list[str] = []
        response_start_timestamp_twilio: int | None = None

        async def receive_from_twilio() -> None:
            """Twilio audio -> input_audio_buffer.append; marks pop the queue."""
            nonlocal stream_sid, latest_media_timestamp
            try:
                async for message in websocket:
                    try:
                        data = json.loads(message)
                        if data["event"] == "media" and openai_ws.state is State.OPEN:
                            latest_media_timestamp = int(data["media"]["timestamp"])
                            await openai_ws.send(json.dumps({"type": "input_audio_buffer.append",
                                                             "audio": data["media"]["payload"]}))
                        elif data["event"] == "start":
                            stream_sid = data["start"]["streamSid"]
                            log.info("Incoming stream has started %s", stream_sid)
                            latest_media_timestamp = 0  # (the sample also "resets" two locals here)
                        elif data["event"] == "mark":
                            if mark_queue:
                                mark_queue.pop(0)
                    except (ValueError, KeyError, TypeError) as exc:
                        log.warning("%s: bad Twilio message %.80r: %r", stream_sid, message, exc)
            except ConnectionClosed:
                pass
            log.info("Client disconnected.")
            if openai_ws.state is State.OPEN:
                await openai_ws.close()

        async def send_to_twilio() -> None:
            """OpenAI audio -> Twilio media + a mark each; speech_started -> interruption."""
            nonlocal last_assistant_item, response_start_timestamp_twilio
            try:
                async for openai_message in openai_ws:
                    try:
                        response = json.loads(openai_message)
                        if response["type"] in LOG_EVENT_TYPES:
                            log.info("Received event: %s %.200s", response["type"], response)
                        if response.get("type") == "response.output_audio.delta" and "delta" in response:
                            audio_payload = base64.b64encode(base64.b64decode(response["delta"])).decode()
                            await websocket.send(json.dumps({"event": "media", "streamSid": stream_sid,
                                                             "media": {"payload": audio_payload}}))
                            if response.get("item_id") and response["item_id"] != last_assistant_item:
                                response_start_timestamp_twilio = latest_media_timestamp
                                last_assistant_item = response["item_id"]
                            await send_mark(websocket, stream_sid)
                        if response.get("type") == "input_audio_buffer.speech_started":
                            log.info("Speech started detected.")
                            if last_assistant_item:
                                log.info("Interrupting response with id: %s", last_assistant_item)
                                await handle_speech_started_event()
                    except (ValueError, KeyError, TypeError) as exc:
                        log.warning("%s: bad OpenAI message %.80r: %r", stream_sid, openai_message, exc)
            except ConnectionClosed as e:
                log.info("Error in send_to_twilio: %s", e)  # the caller stays on the line, as in the sample

        async def handle_speech_started_event() -> None:
            """Truncate at (latest media timestamp - item start timestamp), then clear."""
            nonlocal response_start_timestamp_twilio, last_assistant_item
            if mark_queue and response_start_timestamp_twilio is not None:
                elapsed_time = latest_media_timestamp - response_start_timestamp_twilio
                if last_assistant_item:
                    await openai_ws.send(json.dumps({"type": "conversation.item.truncate",
                                                     "item_id": last_assistant_item, "content_index": 0,
                                                     "audio_end_ms": elapsed_time}))
                await websocket.send(json.dumps({"event": "clear", "streamSid": stream_sid}))
                mark_queue.clear()
                last_assistant_item = None
                response_start_timestamp_twilio = None

        async def send_mark(connection: ServerConnection, sid: str | None) -> None:
            if sid:
                await connection.send(json.dumps({"event": "mark", "streamSid": sid,
                                                  "mark": {"name": "responsePart"}}))
                mark_queue.append("responsePart")

        await asyncio.gather(receive_from_twilio(), send_to_twilio())


async def send_initial_conversation_item(openai_ws: ClientConnection) -> None:
    """Have the AI speak first (off by default, as in the sample)."""
    await openai_ws.send(json.dumps({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user",
        "content": [{"type": "input_text", "text": "Greet the user and ask how you can help."}]}}))
    await openai_ws.send(json.dumps({"type": "response.create"}))


async def initialize_session(openai_ws: ClientConnection, greet: bool) -> None:
    session_update: dict[str, Any] = {"type": "session.update", "session": {
        "type": "realtime", "model": "gpt-realtime", "output_modalities": ["audio"],
        "audio": {"input": {"format": {"type": "audio/pcmu"}, "turn_detection": {"type": "server_vad"}},
                  "output": {"format": {"type": "audio/pcmu"}}},
        "instructions": SYSTEM_MESSAGE}}
    log.info("Sending session update")
    await openai_ws.send(json.dumps(session_update))
    if greet:
        await send_initial_conversation_item(openai_ws)


async def main(opts: argparse.Namespace) -> None:
    async def process_request(conn: ServerConnection, request: Any) -> Any:
        return None if request.path.split("?")[0] == "/media-stream" else conn.respond(404, "not found\n")

    async def handler(conn: ServerConnection) -> None:
        try:
            await handle_media_stream(conn, opts)
        except Exception as exc:  # e.g. OpenAI refused the connection: this call ends, the server stays
            log.error("call failed: %r", exc)

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with serve(handler, "127.0.0.1", opts.port, process_request=process_request, max_size=2**24) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"listening ws://127.0.0.1:{port}/media-stream", flush=True)
        await stop.wait()


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s sample %(message)s")
    p = argparse.ArgumentParser(description="twilio-samples Python media-stream handler, websockets port")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--openai-url", required=True)
    p.add_argument("--greet", action="store_true", help="send the initial conversation item (AI speaks first)")
    asyncio.run(main(p.parse_args()))
