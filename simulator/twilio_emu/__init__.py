"""A local stand-in for the part of Twilio that voice agents and ``callsim dial`` use.

The REST surface lives here as sans-IO cores (:mod:`.errors`, :mod:`.calls`, :mod:`.rest`)
plus a thin trio HTTP server (:mod:`.server`). The call legs (:mod:`.twiml`, :mod:`.leg`,
sans-IO; :mod:`.engine` on trio) consume the store's events (:class:`.calls.CallEvent`): calls
ring, answer, run their TwiML, carry audio between their Media Streams and end.
"""
