"""callsim's harness: a fake Twilio caller (and, later, a mock OpenAI Realtime server).

It never imports :mod:`bridge`: it tests any bridge through the wire alone.
"""

__version__ = "0.1.0"
