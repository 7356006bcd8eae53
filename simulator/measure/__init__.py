"""What a call measured, judged and reported.

It reads :class:`..caller.call_result.CallResult` and the mock's records, never a driver: the
figures do not depend on which driver placed the call (an import-linter contract says so).
"""
