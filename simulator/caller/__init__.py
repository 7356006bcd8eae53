"""The fake Twilio caller.

The sans-IO core (:mod:`.core`) with Twilio's wire format (:mod:`.twilio_wire`), playback as
Twilio plays (:mod:`.playback`), line impairments, the call script, the webhook a call starts
with, and the two thin drivers that put the core on a socket: trio (:mod:`.trio_driver`) and
gevent for Locust (:mod:`.gevent_driver`). What a call produced is a
:class:`.call_result.CallResult`, which is all the measurement room reads.
"""
