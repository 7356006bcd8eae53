"""callsim's Twilio Media Streams <-> OpenAI Realtime bridge (trio, hypercorn, quart-trio).

It never imports :mod:`callsim.simulator`: the product must not depend on its test harness.
"""
