"""The console token: bearer header, login sessions, constant-time checks, off when unset."""

from __future__ import annotations

from callsim.bridge.console_auth import MAX_SESSIONS, SESSION_TTL_S, ConsoleAuth
from callsim.bridge.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_unset_token_turns_everything_off():
    auth = ConsoleAuth(None)
    assert not auth.enabled
    assert not auth.bearer_ok("Bearer ")
    assert not auth.allows("Bearer anything", None)
    assert auth.login("") is None and auth.login(None) is None


def test_bearer_header():
    auth = ConsoleAuth("s3cret")
    assert auth.enabled
    assert auth.bearer_ok("Bearer s3cret")
    assert auth.bearer_ok("bearer  s3cret ")
    assert not auth.bearer_ok("Bearer s3cre")
    assert not auth.bearer_ok("Basic s3cret")
    assert not auth.bearer_ok("s3cret")
    assert not auth.bearer_ok(None)


def test_login_session_slides_and_expires():
    clock = Clock()
    auth = ConsoleAuth("s3cret", clock=clock)
    assert auth.login("wrong") is None
    session = auth.login("s3cret")
    assert session and auth.allows(None, session)
    clock.now += SESSION_TTL_S - 1
    assert auth.session_ok(session)  # used: the expiry moves on
    clock.now += SESSION_TTL_S - 1
    assert auth.session_ok(session)
    clock.now += SESSION_TTL_S + 1
    assert not auth.session_ok(session)
    assert not auth.allows(None, "made-up")


def test_logout_and_bounded_sessions():
    auth = ConsoleAuth("s3cret")
    first = auth.login("s3cret")
    auth.logout(first)
    assert not auth.session_ok(first)
    sessions = [auth.login("s3cret") for _ in range(MAX_SESSIONS + 5)]
    assert not auth.session_ok(sessions[0])  # the oldest went first
    assert auth.session_ok(sessions[-1])


def test_setting_from_environment(monkeypatch):
    monkeypatch.setenv("CONSOLE_TOKEN", "from-env")
    s = Settings(openai_api_key="sk-x")
    assert s.console_token is not None and s.console_token.get_secret_value() == "from-env"
    assert "from-env" not in repr(s)
    monkeypatch.setenv("CONSOLE_TOKEN", "")
    assert Settings(openai_api_key="sk-x").console_token is None
