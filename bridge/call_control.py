"""What a call does beyond answering turns: keypresses, a silent caller, the model hanging up.

Plain data the app builds from :class:`.settings.Settings` and hands every :class:`.call.CallCore`
(sans-IO: no clock, no I/O). Kept out of :mod:`.realtime` because none of it is part of the
OpenAI session's configuration: it is the bridge's own policy around it.

* **DTMF** (``DTMF_MODE``): Twilio's ``dtmf`` event becomes a user text item naming the key
  (:func:`dtmf_text`), so the model knows what was pressed; ``respond`` also asks for a response
  (after the one under way, if any). A keypress is not a barge-in: it does not stop playback.
* **Silent caller** (``SILENCE_REPROMPT_S``, ``SILENCE_MAX_PROMPTS``): see :mod:`.silence`.
* **end_call**: a tool the model calls to hang up; the core handles it itself (it acts on the
  call, which no registry tool can) and ends the stream only once the goodbye has played.
* **transfer_call** (``TRANSFER_NUMBER``): a tool the model calls to hand the caller to a person.
  The destination is the setting, never a number the model says; the core lets the pre-transfer
  phrase play out (the mark after its last audio, bounded like the goodbye) and then asks the
  driver to redirect the live call over Twilio's REST API (:mod:`.transfer`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

DtmfMode = Literal["off", "item", "respond"]

#: the keys Twilio reports in a ``dtmf`` event
DTMF_KEYS = frozenset("0123456789*#ABCD")



def _call_tool(name: str, description: str, reason: str) -> dict[str, Any]:
    """The schema of one of the bridge's own call tools: one optional ``reason`` for the call log."""
    return {"type": "function", "name": name, "description": description,
            "parameters": {"type": "object", "properties": {"reason": {"type": "string", "description": reason}},
                           "required": [], "additionalProperties": False}}


END_CALL = "end_call"
END_CALL_SCHEMA = _call_tool(
    END_CALL,
    "Hang up the phone call. Call it only when the conversation is over (the caller said goodbye or asked to "
    "end the call), after or together with a short goodbye: the call ends once your goodbye has played.",
    "Why the call ends, for the call log.")
#: the function_call_output of end_call: the model's next reply is the goodbye
END_CALL_OUTPUT = '{"ok":true,"note":"The call ends after your next reply: say a short goodbye now."}'

TRANSFER_CALL = "transfer_call"
TRANSFER_CALL_SCHEMA = _call_tool(
    TRANSFER_CALL,
    "Transfer the phone call to a person at the front desk. Call it when the caller asks for a human or needs "
    "help you cannot give, after or together with one short sentence telling them you are transferring them: "
    "the call is transferred once that sentence has played.",
    "Why the caller is transferred, for the call log.")
#: the function_call_output of transfer_call when it came without the phrase: the next reply is the phrase
TRANSFER_PENDING_OUTPUT = ('{"ok":true,"status":"pending","note":"The call is transferred after your next reply: '
                           'tell the caller in one short sentence that you are transferring them now."}')


def transfer_failed_output(error: str) -> str:
    """What the model is told when the redirect failed: the call goes on with it."""
    return json.dumps({"error": f"the transfer failed: {error}",
                       "note": "Tell the caller you could not transfer them, and keep helping them."})


REPROMPT_INSTRUCTIONS = ("The caller has said nothing for a while. In one short sentence, ask whether "
                         "they are still there.")
SILENCE_GOODBYE_INSTRUCTIONS = ("The caller has stayed silent. Say a short, polite goodbye, explaining that "
                                "you will end the call now.")


@dataclass(frozen=True)
class CallControl:
    """The bridge's call-level policy (``Settings``: ``DTMF_MODE``, ``SILENCE_*``, ``END_CALL_TOOL``,
    ``TRANSFER_NUMBER``)."""

    dtmf_mode: DtmfMode = "respond"
    silence_reprompt_s: float = 0.0  # 0: never re-prompt (off)
    silence_max_prompts: int = 2
    reprompt_instructions: str = REPROMPT_INSTRUCTIONS
    silence_goodbye_instructions: str = SILENCE_GOODBYE_INSTRUCTIONS
    #: longest the bridge waits, past the goodbye's estimated end, for the mark after its last audio
    goodbye_grace_s: float = 3.0
    #: the core handles ``transfer_call`` (the app set it up: ``TRANSFER_NUMBER`` and a Twilio account)
    transfer: bool = False


def dtmf_text(key: str) -> str:
    """The user text item for one keypress (``key`` is one of :data:`DTMF_KEYS`)."""
    return f"The caller pressed {key} on the phone keypad."
