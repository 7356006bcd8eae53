"""callsim's harness: a fake Twilio caller, a mock OpenAI Realtime server, and what they measure.

It never imports :mod:`callsim.bridge`: it tests any bridge through the wire alone.
"""

__version__ = "0.1.0"
