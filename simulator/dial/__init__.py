"""``callsim dial``: a scenario through a real Twilio call to a real number.

:mod:`.request` checks what the user asked for and builds what Twilio is sent (the TwiML and the
``calls.create`` parameters); :mod:`.plan` is the call's REST lifecycle without I/O (create, wait
for Twilio's media stream, hang up on every exit); :mod:`.driver` runs that plan with the
``twilio`` package's client on trio; :mod:`.command` is the subcommand.
"""
