"""app/policy/commandline.py and app/policy/jobspec.py: turning requests into argv, timeouts and resume cursors."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.config import Settings
from app.policy.commandline import InvalidCommand, display_command, parse_command, validate_argv
from app.policy.jobspec import (
    InvalidRequest,
    JobSpec,
    parse_command_query,
    parse_job_request,
    parse_last_event_id,
    parse_timeout,
)

LIMITS = {"max_length": 100, "max_items": 5}
SETTINGS = Settings(default_timeout=30.0, max_timeout=60.0, max_command_length=100, max_argv_items=5)


# parse_command


@pytest.mark.parametrize(
    ("text", "argv"),
    [
        ("echo hello", ["echo", "hello"]),
        ("  echo   spaced\tout  ", ["echo", "spaced", "out"]),
        ("echo 'single quoted' \"double quoted\"", ["echo", "single quoted", "double quoted"]),
        ("echo a\\ b", ["echo", "a b"]),
        ("echo ''", ["echo", ""]),
        # Shell syntax is never interpreted: it stays plain arguments.
        ("echo hi; rm -rf /", ["echo", "hi;", "rm", "-rf", "/"]),
        ("echo $(id) `id` $HOME | cat > /tmp/x && true", ["echo", "$(id)", "`id`", "$HOME", "|", "cat", ">",
                                                         "/tmp/x", "&&", "true"]),
        ("echo # not a comment", ["echo", "#", "not", "a", "comment"]),
        ("echo \u20ac \U0001f600", ["echo", "\u20ac", "\U0001f600"]),
    ],
)
def test_parse_command_splits_like_a_posix_shell_without_running_one(text, argv):
    assert parse_command(text, max_length=100, max_items=10) == argv


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("   \t\n", "empty"),
        ("''", "program name is empty"),
        ("echo 'unclosed", "cannot be split"),
        ('echo "unclosed', "cannot be split"),
        ("echo trailing\\", "cannot be split"),
        ("echo a\0b", "NUL"),
        ("x" * 101, "longer than 100"),
        ("a b c d e f", "more than 5"),
    ],
)
def test_parse_command_refusals(text, message):
    with pytest.raises(InvalidCommand, match=message):
        parse_command(text, **LIMITS)


def test_parse_command_length_limit_is_inclusive():
    assert parse_command("x" * 100, **LIMITS) == ["x" * 100]


@pytest.mark.parametrize("value", [None, 42, b"echo hi", ["echo", "hi"], {"command": "echo"}])
def test_parse_command_needs_a_string(value):
    with pytest.raises(InvalidCommand, match="must be a string"):
        parse_command(value, **LIMITS)


def test_invalid_command_is_a_value_error():
    assert issubclass(InvalidCommand, ValueError)


# validate_argv


def test_validate_argv_accepts_lists_and_tuples_and_returns_a_new_list():
    argv = ["echo", "a b", ""]
    result = validate_argv(argv, **LIMITS)
    assert result == argv and result is not argv
    assert validate_argv(("echo", "x"), **LIMITS) == ["echo", "x"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "empty"),
        ("echo hi", "list of strings"),
        (b"echo", "list of strings"),
        (None, "list of strings"),
        ({"echo": 1}, "list of strings"),
        (["echo", 1], "list of strings"),
        (["echo", None], "list of strings"),
        (["echo", b"x"], "list of strings"),
        (["", "x"], "program name is empty"),
        (["echo", "a\0"], "NUL"),
        (["\0"], "NUL"),
        (["a"] * 6, "more than 5"),
        (["x" * 50, "y" * 50], "longer than 100"),  # 50 + 1 + 50 = 101
    ],
)
def test_validate_argv_refusals(argv, message):
    with pytest.raises(InvalidCommand, match=message):
        validate_argv(argv, **LIMITS)


def test_validate_argv_length_counts_separating_spaces():
    assert validate_argv(["x" * 49, "y" * 50], **LIMITS)  # 49 + 1 + 50 = 100
    assert validate_argv(["a"] * 5, **LIMITS) == ["a"] * 5


# display_command


def test_display_command_quotes_for_people():
    assert display_command(["echo", "a b", "it's", ""]) == "echo 'a b' 'it'\"'\"'s' ''"


ARG = st.text(st.characters(exclude_characters="\0"), max_size=12)


@settings(max_examples=150, deadline=None)
@given(argv=st.lists(ARG, min_size=1, max_size=5).filter(lambda a: a[0] != ""))
def test_display_command_round_trips_through_parse_command(argv):
    line = display_command(argv)
    assert parse_command(line, max_length=10_000, max_items=10) == argv


# parse_timeout


@pytest.mark.parametrize(("value", "expected"), [(None, 30.0), (1, 1.0), (0.5, 0.5), (60, 60.0), (60.0, 60.0)])
def test_parse_timeout(value, expected):
    result = parse_timeout(value, SETTINGS)
    assert result == expected and isinstance(result, float)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "greater than zero"),
        (-1, "greater than zero"),
        (60.001, "must not exceed 60"),
        (math.inf, "number of seconds"),
        (-math.inf, "number of seconds"),
        (math.nan, "number of seconds"),
        (True, "number of seconds"),
        ("10", "number of seconds"),
        ([10], "number of seconds"),
    ],
)
def test_parse_timeout_refusals(value, message):
    with pytest.raises(InvalidRequest, match=message):
        parse_timeout(value, SETTINGS)


# parse_job_request


def test_job_request_with_command():
    assert parse_job_request({"command": "echo 'a b'"}, SETTINGS) == JobSpec(argv=("echo", "a b"), timeout=30.0)


def test_job_request_with_argv_and_timeout():
    spec = parse_job_request({"argv": ["printf", "%s\\n", "a;b"], "timeout": 5}, SETTINGS)
    assert spec == JobSpec(argv=("printf", "%s\\n", "a;b"), timeout=5.0)


def test_job_request_null_timeout_means_default():
    assert parse_job_request({"argv": ["true"], "timeout": None}, SETTINGS).timeout == 30.0


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (["echo"], "JSON object"),
        ("echo hi", "JSON object"),
        (None, "JSON object"),
        ({}, "exactly one"),
        ({"command": "echo", "argv": ["echo"]}, "exactly one"),
        ({"timeout": 5}, "exactly one"),
        ({"command": "echo", "cwd": "/"}, "unknown field.*cwd"),
        ({"command": "echo", "env": {}, "shell": True}, "unknown field.*env, shell"),
        ({"command": ""}, "empty"),
        ({"command": 5}, "must be a string"),
        ({"argv": "echo hi"}, "list of strings"),
        ({"argv": []}, "empty"),
        ({"argv": ["echo", 5]}, "list of strings"),
        ({"command": "echo 'x"}, "cannot be split"),
        ({"command": "x" * 101}, "longer than 100"),
        ({"argv": ["a"] * 6}, "more than 5"),
        ({"command": "echo", "timeout": 0}, "greater than zero"),
        ({"command": "echo", "timeout": 61}, "must not exceed"),
        ({"command": "echo", "timeout": "5"}, "number of seconds"),
        ({"argv": ["echo"], "params": {}}, "'params' goes with 'action'"),
        ({"action": "no-such-action"}, "unknown action"),
        ({"action": 5}, "action must be a string"),
        ({"action": "x", "command": "echo"}, "exactly one"),
    ],
)
def test_job_request_refusals_are_invalid_request(payload, message):
    with pytest.raises(InvalidRequest, match=message):
        parse_job_request(payload, SETTINGS)


# parse_command_query


def test_command_query():
    assert parse_command_query("ls -l /tmp", None, SETTINGS) == JobSpec(argv=("ls", "-l", "/tmp"), timeout=30.0)
    assert parse_command_query("sleep 1", "2.5", SETTINGS).timeout == 2.5
    assert parse_command_query("sleep 1", "7", SETTINGS).timeout == 7.0
    assert parse_command_query("sleep 1", "6e1", SETTINGS).timeout == 60.0


@pytest.mark.parametrize(
    ("command", "timeout", "message"),
    [
        (None, None, "missing query parameter 'command'"),
        ("", None, "empty"),
        ("echo 'x", None, "cannot be split"),
        ("echo\0", None, "NUL"),
        ("sleep 1", "soon", "number of seconds"),
        ("sleep 1", "", "number of seconds"),
        ("sleep 1", "nan", "number of seconds"),
        ("sleep 1", "inf", "number of seconds"),
        ("sleep 1", "0", "greater than zero"),
        ("sleep 1", "-3", "greater than zero"),
        ("sleep 1", "1e9", "must not exceed"),
        # Plain ASCII numbers only: float() would take all of these.
        ("sleep 1", " 7 ", "number of seconds"),
        ("sleep 1", "1_0", "number of seconds"),
        ("sleep 1", "\u0667", "number of seconds"),
        ("sleep 1", "+5", "number of seconds"),
        ("sleep 1", "Infinity", "number of seconds"),
        ("sleep 1", "9" * 20 + "e9999", "number of seconds"),
    ],
)
def test_command_query_refusals(command, timeout, message):
    with pytest.raises(InvalidRequest, match=message):
        parse_command_query(command, timeout, SETTINGS)


# parse_last_event_id


@pytest.mark.parametrize(
    ("header", "query", "expected"),
    [
        (None, None, 0),
        ("", None, 0),
        ("   ", None, 0),
        ("42", None, 42),
        (" 42 ", None, 42),
        (None, "17", 17),
        ("42", "17", 42),  # the header wins
        ("0", None, 0),
        ("9" * 19, None, int("9" * 19)),
    ],
)
def test_last_event_id(header, query, expected):
    assert parse_last_event_id(header, query) == expected


def test_empty_header_still_wins_over_query():
    assert parse_last_event_id("", "17") == 0


@pytest.mark.parametrize(
    "value", ["-1", "+1", "1.0", "1e3", "abc", "0x10", "1 2", "9" * 20, "\uff11", "\u0661", "1_000"]
)
def test_bad_last_event_id(value):
    with pytest.raises(InvalidRequest, match="Last-Event-ID"):
        parse_last_event_id(value, None)
    with pytest.raises(InvalidRequest, match="Last-Event-ID"):
        parse_last_event_id(None, value)


def test_invalid_request_is_a_value_error():
    assert issubclass(InvalidRequest, ValueError)


def test_an_actions_timeout_is_a_ceiling_for_callers():
    from app.policy.actions import parse_actions

    settings = Settings().with_overrides(
        actions=parse_actions({"nap": {"argv": ["sleep", "1"], "timeout": 5}})
    )
    assert parse_job_request({"action": "nap"}, settings).timeout == 5
    assert parse_job_request({"action": "nap", "timeout": 2}, settings).timeout == 2
    # An explicit null is "no preference": the action's own timeout, not the (larger) server default.
    assert parse_job_request({"action": "nap", "timeout": None}, settings).timeout == 5
    with pytest.raises(InvalidRequest, match="must not exceed this action's 5 seconds"):
        parse_job_request({"action": "nap", "timeout": 86400}, settings)


def test_an_action_marked_confirm_needs_confirm_true():
    from app.policy.access import AccessConfigError
    from app.policy.actions import parse_actions

    actions = parse_actions({"wipe": {"argv": ["echo", "wiping", "{env}"], "confirm": True,
                                      "params": {"env": {"type": "choice", "choices": ["a", "b"]}}},
                             "look": {"argv": ["echo", "look"]}})
    assert actions["wipe"].to_json()["confirm"] is True
    assert actions["look"].to_json()["confirm"] is False
    settings = Settings().with_overrides(actions=actions)
    unconfirmed = {"action": "wipe", "params": {"env": "a"}}
    for body in (unconfirmed, {**unconfirmed, "confirm": False}):
        with pytest.raises(InvalidRequest, match="""action 'wipe' must be confirmed: send "confirm": true"""):
            parse_job_request(body, settings)
    # Parameters are checked first: a wrong one is the answer, confirmed or not.
    with pytest.raises(InvalidRequest, match="parameter 'env'"):
        parse_job_request({"action": "wipe", "params": {"env": "c"}}, settings)
    spec = parse_job_request({"action": "wipe", "params": {"env": "a"}, "confirm": True}, settings)
    assert spec.argv == ("echo", "wiping", "a")
    # Confirming what does not ask for it is harmless; confirm must be a boolean.
    assert parse_job_request({"action": "look", "confirm": True}, settings).argv == ("echo", "look")
    assert parse_job_request({"command": "echo hi", "confirm": True}, settings).argv == ("echo", "hi")
    with pytest.raises(InvalidRequest, match="confirm must be true or false"):
        parse_job_request({"action": "wipe", "params": {"env": "a"}, "confirm": "yes"}, settings)
    with pytest.raises(AccessConfigError, match=r"actions\.wipe\.confirm: expected true or false"):
        parse_actions({"wipe": {"argv": ["echo"], "confirm": "yes"}})


def test_stdin_and_stderr_options_as_the_settings_and_actions_allow():
    from app.policy.access import AccessConfigError
    from app.policy.actions import parse_actions

    actions = parse_actions({
        "ask": {"argv": ["head", "-n", "1"], "stdin": True, "stderr": "merged"},
        "plain": {"argv": ["cat"]},
    })
    off = Settings().with_overrides(actions=actions)
    on = off.with_overrides(allow_stdin=True)
    with pytest.raises(InvalidRequest, match=r"does not take input to commands \(allow_stdin\)"):
        parse_job_request({"argv": ["cat"], "stdin": True}, off)
    assert parse_job_request({"argv": ["cat"], "stdin": True}, on).stdin is True
    assert parse_job_request({"argv": ["cat"]}, on).stdin is False
    # An action opts in whatever the setting says; one that does not needs the setting.
    ask = parse_job_request({"action": "ask"}, off)
    assert (ask.stdin, ask.stderr) == (True, "merged")
    assert parse_job_request({"action": "ask", "stdin": False}, off).stdin is False
    assert parse_job_request({"action": "ask", "stderr": "separate"}, off).stderr == "separate"
    with pytest.raises(InvalidRequest, match="action 'plain' takes no input"):
        parse_job_request({"action": "plain", "stdin": True}, off)
    assert parse_job_request({"action": "plain", "stdin": True}, on).stdin is True
    assert actions["ask"].to_json()["stdin"] is True and actions["plain"].to_json()["stderr"] == "separate"
    for bad in ({"stdin": "yes"}, {"stderr": "both"}):
        with pytest.raises(AccessConfigError):
            parse_actions({"x": {"argv": ["cat"], **bad}})
