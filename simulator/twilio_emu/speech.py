"""``<Say>`` audio: espeak-ng's voice as 8 kHz μ-law, the line Twilio's text-to-speech plays on.

Twilio's voices are not available offline; espeak-ng is (it is installed in CI). Its words
are not Twilio's, nor is its pace, but a listener (a stream server, a test) hears speech
where Twilio would speak, for about as long. When espeak-ng is missing or fails, the leg
plays silence for the time the words would take (:class:`~.leg.Speak`), so ``<Say>`` is
still honoured in time.
"""

from __future__ import annotations

import logging
import shutil
import struct

import numpy as np
import trio

from ..audio.codec import to_ulaw_8k

log = logging.getLogger("callsim.twilio_emu")

SYNTH_TIMEOUT_S = 10.0
ESPEAK = "espeak-ng"


def wav_to_ulaw(wav: bytes) -> bytes:
    """espeak-ng's ``--stdout`` WAV (16-bit mono, its length fields left unset) → 8 kHz μ-law."""
    if wav[:4] != b"RIFF" or wav[8:12] != b"WAVE":
        raise ValueError("not a WAV stream")
    rate = struct.unpack_from("<I", wav, 24)[0]
    at = wav.find(b"data", 12)
    if at < 0:
        raise ValueError("WAV stream without data")
    pcm = wav[at + 8:]
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2")
    return to_ulaw_8k(samples, rate)


async def synthesize(text: str, language: str | None = None) -> bytes | None:
    """``text`` spoken by espeak-ng as μ-law, or ``None`` (logged) when it cannot be."""
    exe = shutil.which(ESPEAK)
    if exe is None:
        return None
    argv = [exe, "--stdout"]
    if language:
        argv += ["-v", language.lower()]
    argv.append(text)
    try:
        with trio.fail_after(SYNTH_TIMEOUT_S):
            done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
        if done.returncode != 0 and language:  # an unknown voice: the default one rather than none
            with trio.fail_after(SYNTH_TIMEOUT_S):
                done = await trio.run_process([exe, "--stdout", text], capture_stdout=True,
                                              capture_stderr=True, check=False)
        if done.returncode != 0:
            raise OSError(f"exit {done.returncode}: {done.stderr.decode(errors='replace')[:200]}")
        return await trio.to_thread.run_sync(wav_to_ulaw, done.stdout)
    except (OSError, ValueError, trio.TooSlowError) as exc:
        log.warning("<Say> synthesis failed (%s): silence for its duration instead", exc)
        return None
