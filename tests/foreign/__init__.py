"""Foreign-style bridges: negative (and neutral) controls for callsim that share no code with it.

Each bridge here is one standalone file written the way public samples are (plain asyncio +
``websockets``), importing nothing from this repository, so a verdict the harness gives on them
cannot lean on knowledge of our own bridge. :mod:`tests.foreign.launch` runs them as subprocesses.
"""
