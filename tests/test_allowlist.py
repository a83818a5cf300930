"""app/policy/allowlist.py: which programs may run, against a fake bin directory with scripts and symlinks."""

from __future__ import annotations

import logging
import os

import pytest

from app.policy.allowlist import Allowlist, CommandNotAllowed


def make_script(directory, name: str, executable: bool = True) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\necho " + name + "\n")
    path.chmod(0o755 if executable else 0o644)
    return str(path)


@pytest.fixture
def fake(tmp_path):
    """bin/ holds allowed and disallowed scripts and symlinks; other/ holds symlinks outside the search path."""
    bin_dir, other = tmp_path / "bin", tmp_path / "other"
    paths = {
        "ok": make_script(bin_dir, "ok"),
        "also": make_script(bin_dir, "also"),
        "secret": make_script(bin_dir, "secret"),
        "noexec": make_script(bin_dir, "noexec", executable=False),
    }
    (bin_dir / "a-directory").mkdir()
    (bin_dir / "a-directory").chmod(0o755)
    other.mkdir()
    # In bin/: an allowed name that links to a disallowed binary, and a disallowed name linking to an allowed one.
    os.symlink(paths["secret"], bin_dir / "linked-ok")
    os.symlink(paths["ok"], bin_dir / "link-to-ok")
    # Outside the search path: symlinks to allowed and disallowed binaries.
    os.symlink(paths["ok"], other / "ok")
    os.symlink(paths["secret"], other / "secret-link")
    paths.update(bin=str(bin_dir), other=str(other), link_to_ok=str(bin_dir / "link-to-ok"))
    return paths


@pytest.fixture
def allowlist(fake):
    return Allowlist.resolve(["ok", "also", "linked-ok", "missing", "noexec", "a-directory"], search_path=fake["bin"])


def refused(allowlist: Allowlist, program: str) -> str:
    with pytest.raises(CommandNotAllowed) as info:
        allowlist.executable_for(program)
    return str(info.value)


def test_not_allowed_is_a_permission_error():
    assert issubclass(CommandNotAllowed, PermissionError)


def test_allowed_names_resolve_to_their_path(allowlist, fake):
    assert allowlist.executable_for("ok") == fake["ok"]
    assert allowlist.executable_for("also") == os.path.join(fake["bin"], "also")


def test_names_lists_only_what_resolved(allowlist):
    assert allowlist.names() == ["also", "linked-ok", "ok"]


def test_names_not_found_non_executable_or_directories_are_refused_with_a_warning(fake, caplog):
    with caplog.at_level(logging.WARNING, logger="app.policy.allowlist"):
        allowlist = Allowlist.resolve(["missing", "noexec", "a-directory"], search_path=fake["bin"])
    assert {"missing", "noexec", "a-directory"} <= {r.args[0] for r in caplog.records}
    for name in ("missing", "noexec", "a-directory"):
        assert "not allowed" in refused(allowlist, name)


def test_names_not_on_the_list_are_refused(allowlist):
    assert "'secret' is not allowed" in refused(allowlist, "secret")
    refused(allowlist, "sh")
    refused(allowlist, "link-to-ok")  # a symlink to an allowed binary, under another name


@pytest.mark.parametrize("program", ["", "\0", "ok\0", "ok\0/bin/sh"])
def test_empty_or_nul_program_is_refused(allowlist, program):
    assert "invalid program name" in refused(allowlist, program)


@pytest.mark.parametrize("program", ["./ok", "bin/ok", "ok/", "../bin/ok", "./", "."])
def test_relative_paths_are_refused(allowlist, program):
    message = refused(allowlist, program)
    if "/" in program:
        assert "relative paths are not allowed" in message


def test_listed_absolute_path_of_an_allowed_name_is_accepted(allowlist, fake):
    assert allowlist.executable_for(fake["ok"]) == fake["ok"]


def test_absolute_paths_not_listed_are_refused(allowlist, fake):
    assert "is not allowed" in refused(allowlist, fake["secret"])
    refused(allowlist, "/bin/sh")
    refused(allowlist, fake["noexec"])


@pytest.mark.parametrize(
    "suffix",
    ["/../bin/ok", "/./ok", "//ok", "/ok/", "/ok/.", "/ok/..", "/../bin/secret", "/x/../ok"],
)
def test_dot_dot_and_redundant_separators_are_refused(allowlist, fake, suffix):
    program = fake["bin"] + suffix
    refused(allowlist, program)


def test_dot_dot_message(allowlist, fake):
    assert "'..'" in refused(allowlist, fake["bin"] + "/../bin/ok")


def test_symlinks_elsewhere_to_allowed_or_disallowed_binaries_are_refused(allowlist, fake):
    refused(allowlist, os.path.join(fake["other"], "ok"))  # links to the allowed bin/ok
    refused(allowlist, os.path.join(fake["other"], "secret-link"))
    refused(allowlist, fake["link_to_ok"])  # a symlink next to it, under a name not on the list


def test_symlinks_are_refused_by_name_even_when_their_directory_is_searched(fake):
    allowlist = Allowlist.resolve(["ok"], search_path=f"{fake['other']}:{fake['bin']}")
    # The name "ok" resolves to the first match on the path: other/ok, the symlink to bin/ok.
    assert allowlist.executable_for("ok") == os.path.join(fake["other"], "ok")
    refused(allowlist, "secret-link")
    refused(allowlist, fake["ok"])  # the symlink's target was never listed


def test_allowing_a_symlink_name_does_not_allow_its_target(allowlist, fake):
    # linked-ok is on the list and points at secret: the name runs the configured symlink path ...
    assert allowlist.executable_for("linked-ok") == os.path.join(fake["bin"], "linked-ok")
    # ... but the target is not thereby allowed, by name or by path.
    refused(allowlist, "secret")
    refused(allowlist, fake["secret"])


def test_absolute_entries_are_allowed_exactly_and_by_their_base_name(fake):
    allowlist = Allowlist.resolve([fake["also"]], search_path="/nonexistent")
    assert allowlist.executable_for(fake["also"]) == fake["also"]
    assert allowlist.executable_for("also") == fake["also"]
    refused(allowlist, fake["ok"])
    refused(allowlist, "ok")


def test_absolute_entries_are_normalised(fake):
    allowlist = Allowlist.resolve([fake["bin"] + "//./also"], search_path="/nonexistent")
    assert allowlist.executable_for(fake["also"]) == fake["also"]


def test_absolute_symlink_entry_never_runs_anything_but_the_configured_path(fake):
    link = os.path.join(fake["other"], "secret-link")
    allowlist = Allowlist.resolve([link], search_path="/nonexistent")
    assert allowlist.executable_for(link) == link
    # The link's target is either refused, or mapped back to the configured link: never run as given.
    try:
        result = allowlist.executable_for(fake["secret"])
    except CommandNotAllowed:
        result = link
    assert result == link


@pytest.mark.parametrize("entry", ["bin/ok", "./ok", "../ok"])
def test_relative_path_entries_are_a_configuration_error(entry):
    with pytest.raises(ValueError, match="bare name or an absolute path"):
        Allowlist.resolve([entry], search_path="/usr/bin")


def test_names_are_resolved_once_at_start_up(tmp_path, fake):
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    allowlist = Allowlist.resolve(["ok"], search_path=f"{earlier}:{fake['bin']}")
    make_script(earlier, "ok")  # appears later, earlier on the path
    assert allowlist.executable_for("ok") == fake["ok"]


def test_first_match_on_the_search_path_wins(tmp_path, fake):
    first = make_script(tmp_path / "first", "ok")
    allowlist = Allowlist.resolve(["ok"], search_path=f"{tmp_path / 'first'}:{fake['bin']}")
    assert allowlist.executable_for("ok") == first


@pytest.mark.parametrize("search", ["rel", ""])
def test_resolved_executables_are_absolute_even_with_relative_search_path_entries(tmp_path, monkeypatch, search):
    make_script(tmp_path / "rel", "tool")
    monkeypatch.chdir(tmp_path / "rel" if search == "" else tmp_path)
    allowlist = Allowlist.resolve(["tool"], search_path=f"{search}:/nonexistent")
    try:
        executable = allowlist.executable_for("tool")
    except CommandNotAllowed:
        return  # ignoring the relative entry is a fix as well
    # Whatever runs must be the file found at start-up, wherever the child's cwd is.
    assert os.path.isabs(executable)
    assert os.path.samefile(executable, tmp_path / "rel" / "tool")


# allow_any_command


def test_allow_any_resolves_bare_names_on_the_search_path(fake):
    allowlist = Allowlist.resolve([], search_path=fake["bin"], allow_any=True)
    assert allowlist.executable_for("secret") == fake["secret"]


def test_allow_any_runs_unknown_names_from_the_first_search_directory(fake):
    allowlist = Allowlist.resolve([], search_path=f"{fake['bin']}:/usr/bin", allow_any=True)
    assert allowlist.executable_for("no-such-program") == os.path.join(fake["bin"], "no-such-program")


def test_allow_any_accepts_clean_absolute_paths_but_not_relative_or_dot_dot(fake):
    allowlist = Allowlist.resolve([], search_path=fake["bin"], allow_any=True)
    assert allowlist.executable_for(fake["secret"]) == fake["secret"]
    refused(allowlist, "./secret")
    refused(allowlist, "bin/secret")
    refused(allowlist, fake["bin"] + "/../bin/secret")
    refused(allowlist, fake["bin"] + "//secret")
    refused(allowlist, "")
    refused(allowlist, "se\0cret")


def test_allow_any_is_off_by_default(fake):
    assert Allowlist.resolve([], search_path=fake["bin"]).allow_any is False
    refused(Allowlist.resolve([], search_path=fake["bin"]), "ok")
