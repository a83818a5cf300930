"""app/policy/access.py: credentials compared safely whatever the text, and which role a job runs under."""

from __future__ import annotations

import pytest

from app.policy.access import (
    AccessConfigError,
    Credential,
    Policy,
    Principal,
    check_password,
    find_token,
    hash_password,
    hash_token,
    parse_credentials,
    parse_roles,
)

# A low scrypt cost would change the hash format; these are the real hashes, made once.
JOERG = Credential("jörg", ("operator",), password_hash=hash_password("pw-jörg"))
BOB = Credential("bob", ("viewer",), password_hash=hash_password("pw-bob"))
EMOJI = Credential("🤖 bot", ("runner",), password_hash=hash_password("pw-bot"))


def test_non_ascii_user_names_log_in():
    assert check_password([JOERG, BOB], "jörg", "pw-jörg") is JOERG
    assert check_password([BOB, EMOJI], "🤖 bot", "pw-bot") is EMOJI
    assert check_password([JOERG], "jörg", "wrong") is None
    assert check_password([JOERG], "jorg", "pw-jörg") is None


def test_a_user_configured_after_a_non_ascii_one_still_logs_in():
    assert check_password([JOERG, BOB], "bob", "pw-bob") is BOB
    assert check_password([JOERG, EMOJI, BOB], "bob", "pw-bob") is BOB


@pytest.mark.parametrize(("user", "password"), [("\ud800", "x"), ("bob", "\udfff"), ("j\u00f6rg\ud83d", "pw-jörg")])
def test_lone_surrogates_from_json_are_wrong_credentials_not_errors(user, password):
    assert check_password([JOERG, BOB], user, password) is None


def test_tokens_with_any_text_are_compared_not_crashed_on():
    token = "ssecmd_abc"
    credential = Credential("alice", ("admin",), token_hash=hash_token(token))
    assert find_token([credential], token) is credential
    assert find_token([credential], "\ud800") is None
    assert find_token([credential], "ssecmd_äbc") is None


def test_token_hashes_must_be_what_the_cli_prints():
    with pytest.raises(AccessConfigError, match="64 lower-case hex digits"):
        parse_credentials([{"user": "a", "hash": "sha256:" + "é" * 64}], None, parse_roles(None))
    good = hash_token("x")
    assert parse_credentials([{"user": "a", "hash": good}], None, parse_roles(None))[0].token_hash == good


# Roles with their own run-as user.


def test_roles_may_name_the_user_and_group_their_commands_run_as():
    roles = parse_roles({"deployer": {"actions": ["deploy"], "run_as_user": "deploy", "run_as_group": "adm"}})
    assert (roles["deployer"].run_as_user, roles["deployer"].run_as_group) == ("deploy", "adm")
    assert roles["operator"].run_as_user == ""  # built-in roles use the global run_as_user


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"run_as_user": 5}, "run_as_user: expected a user or group name"),
        ({"run_as_group": "adm"}, "run_as_group: needs run_as_user too"),
    ],
)
def test_bad_run_as_settings_of_a_role_are_refused(spec, message):
    with pytest.raises(AccessConfigError, match=message):
        parse_roles({"r": spec})


def test_the_first_of_the_callers_roles_that_allows_it_is_the_one_a_job_runs_under():
    roles = parse_roles({
        "deployer": {"actions": ["deploy"], "run_as_user": "deploy"},
        "reader": {"commands": ["cat"], "run_as_user": "reader"},
    })
    policy = Policy(roles)
    both = Principal("alice", ("reader", "deployer", "operator"), "token")
    assert policy.role_for_action(both, "deploy").name == "deployer"
    assert policy.role_for_command(both, "cat").name == "reader"
    assert policy.role_for_command(both, "ls").name == "operator"
    assert policy.role_for_action(Principal("v", ("viewer",), "token"), "deploy") is None
    ticket = Principal("alice", ("operator",), "ticket", ticket_job="j1")
    assert policy.role_for_command(ticket, "ls") is None and not policy.may_run_command(ticket, "ls")
