"""A local stand-in for the part of Twilio that voice agents and ``callsim dial`` use.

The REST surface lives here as sans-IO cores (:mod:`.errors`, :mod:`.calls`, :mod:`.rest`)
plus a thin trio HTTP server (:mod:`.server`). The call legs and their audio consume the
core's events (:class:`.calls.CallEvent`); they are not part of this room yet.
"""
