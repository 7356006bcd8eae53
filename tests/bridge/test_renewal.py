"""Session renewal, sans-IO: when to renew, when the call is quiet enough to switch, what seeds the
next session, and what the core forgets at a switch (bridge/renewal.py, CallCore.session_switched)."""

from __future__ import annotations

import json

from callsim.bridge.actions import SaveTranscript
from callsim.bridge.call import Hangup, ToOpenAI
from callsim.bridge.renewal import MAX_SEED_ITEMS, RenewalPolicy, TranscriptLog, quiet, seed_messages

from .callcore_kit import MS, audio_delta, b64, oa, response_created, started_core, ulaw

S = 1_000_000_000


def test_policy_opens_ahead_and_switches_before_the_limit():
    p = RenewalPolicy(session_max_s=3600, renew_before_s=300)
    assert p.enabled
    assert p.open_at_ns(0) == 3300 * S
    assert p.hard_ns(0) == 3598 * S  # 2 s margin
    short = RenewalPolicy(session_max_s=20, renew_before_s=2)
    assert short.hard_ns(0) == 19 * S  # at most half the lead
    assert not RenewalPolicy(renew_before_s=0).enabled


def test_quiet_waits_for_the_caller_the_reply_and_the_playback():
    core, tw = started_core()
    assert quiet(core) is None
    core.openai_message(10 * MS, oa("input_audio_buffer.speech_started", audio_start_ms=100, item_id="i1"))
    assert quiet(core) == "the caller is speaking"
    core.openai_message(20 * MS, oa("input_audio_buffer.speech_stopped", audio_end_ms=900, item_id="i1"))
    core.openai_message(21 * MS, oa("input_audio_buffer.committed", item_id="i1"))
    assert "reply is due" in quiet(core)  # between the caller's turn and response.created
    core.openai_message(30 * MS, response_created("resp_1"))
    core.openai_message(31 * MS, audio_delta("item_A", "resp_1", b64(ulaw(800))))
    assert quiet(core) == "a response is in progress"
    core.openai_message(40 * MS, oa("response.done", response={"id": "resp_1", "status": "completed"}))
    assert quiet(core) == "assistant audio is still playing at Twilio"  # its mark not echoed yet
    (mark,) = [a for a in core.queue]
    core.twilio_message(200 * MS, tw.mark(f"{core.gen}:{mark.seq}:{mark.sent}"))
    assert quiet(core) is None


def test_transcript_log_keeps_the_latest_text_of_each_item_and_is_bounded():
    log = TranscriptLog()
    log.add(SaveTranscript("u1", "caller", "hello"))
    log.add(SaveTranscript("a1", "assistant", "Sure, I can help with that."))
    log.add(SaveTranscript("a1", "assistant", "Sure, I", truncated=True, audio_end_ms=500))  # what was heard
    assert log.recent() == [("caller", "hello"), ("assistant", "Sure, I")]
    for i in range(3 * MAX_SEED_ITEMS):
        log.add(SaveTranscript(f"x{i}", "caller", f"line {i}"))
    recent = log.recent()
    assert len(recent) == MAX_SEED_ITEMS and recent[-1] == ("caller", f"line {3 * MAX_SEED_ITEMS - 1}")


def test_seed_messages_replay_the_conversation_as_text_items():
    ga = [json.loads(m) for m in seed_messages([("caller", "hi"), ("assistant", "hello")], "ga")]
    assert [m["type"] for m in ga] == ["conversation.item.create"] * 2
    assert ga[0]["item"]["role"] == "user" and ga[0]["item"]["content"] == [{"type": "input_text", "text": "hi"}]
    assert ga[1]["item"]["role"] == "assistant" and ga[1]["item"]["content"][0]["type"] == "output_text"
    beta = json.loads(seed_messages([("assistant", "hello")], "beta")[0])
    assert beta["item"]["content"][0]["type"] == "text"


def test_session_expired_goes_to_the_renewer_instead_of_ending_the_call():
    expired = "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"code\":\"session_expired\"," \
              "\"message\":\"Your session hit the maximum duration of 20 seconds.\"}}"
    core, _ = started_core(apology_ulaw=ulaw(160))
    assert any(isinstance(a, Hangup) for a in core.openai_message(5 * MS, expired))  # no renewer: the call ends
    core, _ = started_core(apology_ulaw=ulaw(160))
    seen: list[int] = []
    core.on_session_expired = seen.append
    assert core.openai_message(5 * MS, expired) == [] and seen == [5 * MS] and not core.ending


def test_a_switch_to_a_session_not_yet_configured_holds_caller_audio_and_does_not_greet_again():
    core, tw = started_core(ai_greeting="Greet the caller.")
    core.openai_message(30 * MS, response_created("resp_1"))
    core.session_switched(40 * MS, ready=False)
    assert core.active_response is None and "resp_1" in core._dropped_responses
    assert core.twilio_message(50 * MS, tw.media(b64(ulaw(160)))) == []  # held, not sent to a closed socket
    out = core.openai_message(60 * MS, oa("session.updated", session={}))
    appends = [a for a in out if isinstance(a, ToOpenAI) and "input_audio_buffer.append" in a.text]
    assert len(appends) == 1
    assert not any(isinstance(a, ToOpenAI) and "response.create" in a.text for a in out)


class _Driver:
    """What the Renewer uses of its CallDriver; opening a session counts and makes it configured."""

    tag = "CAtest"

    def __init__(self, core) -> None:
        self.core = core
        self.openai = None
        self.opened: list = []
        self.spawned: list = []
        self.notices: list = []
        self.app = self

    def start_openai(self, sess) -> None:
        self.opened.append(sess)
        sess.ready.set()

    def spawn(self, fn, *args) -> None:
        self.spawned.append((fn, args))

    def notice(self, core, n) -> None:
        self.notices.append((n.kind, n.data))


def _due_renewer(core):
    """A Renewer whose current session is past its renewal time and its hard limit."""
    import time

    from callsim.bridge.renewal_driver import OpenAISession, Renewer

    driver = _Driver(core)
    renewer = Renewer(driver, RenewalPolicy(session_max_s=10.0, renew_before_s=5.0))  # type: ignore[arg-type]
    renewer.current = cur = OpenAISession(0, current=True)
    cur.t_open_ns = time.monotonic_ns() - 20 * S
    cur.opened.set()
    return driver, renewer


async def test_no_session_is_opened_nor_switched_to_while_the_call_is_ending():
    """The goodbye or the apology plays on the session that has it: opening a new (paid) session
    then, and switching the call to it, would only cost money and cut what is said."""
    import trio

    core, _ = started_core()
    driver, renewer = _due_renewer(core)
    with trio.move_on_after(0.5):
        await renewer.run()
    assert len(driver.opened) == 1 and renewer.renewals == 1  # the setup renews a call going on
    core, _ = started_core()
    core.ending = True
    driver, renewer = _due_renewer(core)
    with trio.fail_after(2):
        await renewer.run()  # returns: nothing more to renew
    assert driver.opened == [] and renewer.renewals == 0


async def test_a_next_session_opened_before_the_call_began_ending_is_closed_not_switched_to():
    import time

    import trio

    core, _ = started_core()
    core.openai_message(10 * MS, response_created("resp_1"))  # busy: the switch waits
    driver, renewer = _due_renewer(core)
    renewer.policy = RenewalPolicy(session_max_s=100.0, renew_before_s=50.0)
    renewer.current.t_open_ns = time.monotonic_ns() - 60 * S  # opened 50 s ago, the hard limit ahead
    done = trio.Event()

    async def run() -> None:
        await renewer.run()
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await trio.sleep(0.1)
        (nxt,) = driver.opened
        assert renewer.next is nxt and not nxt.retired
        core.ending = True
        with trio.fail_after(1):
            await done.wait()
    assert nxt.retired and renewer.next is None and renewer.renewals == 0 and renewer.current.n == 0


def _replay(msgs: list[str]) -> list[tuple[str, str, str]]:
    """The conversation a session ends up with from ``msgs``: (item id, role, text), in order."""
    conv: list[tuple[str, str, str]] = []
    for m in map(json.loads, msgs):
        if m["type"] == "conversation.item.delete":
            (i,) = [k for k, c in enumerate(conv) if c[0] == m["item_id"]]
            conv.pop(i)
            continue
        assert m["type"] == "conversation.item.create"
        item, prev = m["item"], m.get("previous_item_id")
        at = len(conv) if prev is None else 0 if prev == "root" else [c[0] for c in conv].index(prev) + 1
        conv.insert(at, (item["id"], item["role"], item["content"][0]["text"]))
    return conv


def test_a_seeding_sends_only_the_lines_new_or_changed_since_and_keeps_their_order():
    from callsim.bridge.renewal_seed import Seeding

    log = TranscriptLog()
    log.add(SaveTranscript("u1", "caller", "hello"))
    log.add(SaveTranscript("a1", "assistant", "Sure, I can help with that."))
    seeding = Seeding(1, "ga")
    sent = seeding.seed(log.recent_items())
    assert [r[1:] for r in _replay(sent)] == [("user", "hello"), ("assistant", "Sure, I can help with that.")]
    log.add(SaveTranscript("a1", "assistant", "Sure, I", truncated=True, audio_end_ms=500))  # barged in
    log.add(SaveTranscript("u2", "caller", "what's the weather"))
    log.add(SaveTranscript("a2", "assistant", "Sunny."))
    more, n = seeding.catch_up(log.recent_items())
    assert n == 3 and sum('"conversation.item.delete"' in m for m in more) == 1
    conv = _replay(sent + more)
    assert [r[1:] for r in conv] == [("user", "hello"), ("assistant", "Sure, I"), ("user", "what's the weather"),
                                     ("assistant", "Sunny.")]
    assert len({r[0] for r in conv}) == 4 and all(len(r[0]) <= 32 for r in conv)  # the API caps ids at 32
    assert seeding.catch_up(log.recent_items()) == ([], 0)  # nothing new: nothing sent


class _Ws:
    """A connected socket: records what is sent; ``on_send`` runs before each send completes."""

    def __init__(self, on_send=None) -> None:
        self.sent: list[str] = []
        self.on_send = on_send

    async def send_text(self, text: str) -> None:
        self.sent.append(text)
        if self.on_send is not None:
            self.on_send(text)
        import trio

        await trio.lowlevel.checkpoint()


async def test_the_switch_sends_the_lines_saved_since_the_seed_and_reports_them():
    from callsim.bridge.renewal_driver import OpenAISession

    core, _ = started_core()
    driver, renewer = _due_renewer(core)
    renewer.saved(SaveTranscript("u1", "caller", "hello"))
    nxt = OpenAISession(1)
    nxt.ws = ws = _Ws()
    await renewer.configure(nxt, ws)
    assert len(_replay(ws.sent[1:])) == 1  # session.update, then the seed
    renewer.saved(SaveTranscript("a1", "assistant", "Hi! How can I help?"))  # the exchange before the switch
    renewer.saved(SaveTranscript("u2", "caller", "what's the weather"))
    renewer._switch(0, "quiet", nxt)
    ((fn, args),) = driver.spawned
    await fn(*args)
    assert [r[1:] for r in _replay(ws.sent[1:])] == [("user", "hello"), ("assistant", "Hi! How can I help?"),
                                                    ("user", "what's the weather")]
    ((name, data),) = driver.notices
    assert name == "session_renewed" and (data["seeded_items"], data["caught_up_items"]) == (1, 2)


async def test_a_switch_during_the_seed_catches_the_session_up_once_the_seed_is_sent():
    """Switched to while its seed is still going out (an expiry): what is saved meanwhile follows it."""
    from callsim.bridge.renewal_driver import OpenAISession

    core, _ = started_core()
    driver, renewer = _due_renewer(core)
    renewer.saved(SaveTranscript("u1", "caller", "hello"))
    renewer.saved(SaveTranscript("a1", "assistant", "Sure, I can help with that."))
    nxt = OpenAISession(1)

    def during_the_seed(text: str) -> None:
        if "Sure, I can" in text and not nxt.current:
            renewer.saved(SaveTranscript("a1", "assistant", "Sure, I", truncated=True, audio_end_ms=500))
            renewer._switch(0, "expired", nxt)

    nxt.ws = ws = _Ws(during_the_seed)
    await renewer.configure(nxt, ws)
    assert driver.spawned == []  # configure() sent it, in order after the seed
    assert [r[1:] for r in _replay(ws.sent[1:])] == [("user", "hello"), ("assistant", "Sure, I")]
