"""availctl's commands are one table (tools/availctl/commands.c): its usage,
`availctl help COMMAND`, the dispatch and the man page's COMMANDS section
all come from it. The table is read here from the source, so a command
missing from any of them fails."""
import os
import re
import shutil
import subprocess

import pytest

from harness import BUILD_DIR, SOURCE_DIR, binary

COMMANDS_C = os.path.join(SOURCE_DIR, "tools", "availctl", "commands.c")
MAN_PAGE = os.path.join(BUILD_DIR, "man", "availctl.1")
NO_CONFIG = "/nonexistent/availd.yaml"


def table():
    """The command names of the table, in its order."""
    with open(COMMANDS_C) as f:
        names = re.findall(r'^\s*\.name = "([a-z-]+)",', f.read(), re.M)
    assert len(names) >= 10, names  # config, status, errors, check, cache, registries, reload, metrics...
    return names


def availctl(*args, stdin=subprocess.DEVNULL):
    return subprocess.run([binary("availctl"), *args], capture_output=True, text=True, timeout=30, stdin=stdin)


def synopsis(name):
    """What `availctl help NAME` gives as the command's usage line."""
    r = availctl("help", name)
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0]
    assert first.startswith(f"usage: availctl {name}"), first
    return first[len("usage: availctl "):]


def rendered_man_page():
    """The generated page as a reader sees it, hyphens and all."""
    if shutil.which("man"):
        cmd = ["man", "-l", MAN_PAGE]
    elif shutil.which("groff"):
        cmd = ["groff", "-man", "-Tutf8", MAN_PAGE]
    else:
        pytest.skip("neither man nor groff to render the page")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, MANWIDTH="200", MAN_KEEP_FORMATTING="0", LC_ALL="C.UTF-8"))
    assert r.returncode == 0, r.stderr
    text = re.sub(r".\x08", "", r.stdout)  # overstrike bold, if any
    return text.replace("\u2010", "-").replace("\u2212", "-")


def test_every_command_of_the_table_is_in_the_usage_with_its_synopsis():
    r = availctl("--help")
    assert r.returncode == 0 and r.stderr == ""
    listed = [line.split()[0] for line in r.stdout.splitlines() if re.match(r"  [a-z]", line)]
    assert listed == table()
    for name in table():
        assert f"\n  {synopsis(name)}" in r.stdout, name


def test_every_command_of_the_table_is_in_the_man_page_with_its_synopsis():
    text = rendered_man_page()
    commands = text.split("\nCOMMANDS\n", 1)[1].split("\nEXIT STATUS\n", 1)[0]
    squeezed = " ".join(commands.split())
    for name in table():
        assert " ".join(synopsis(name).split()) in squeezed, name
    # Each command once, as the heading of its entry, and nothing else.
    headings = re.findall(r"^ {7}(\S+)", commands, re.M)
    assert headings == table()


def test_the_man_page_commands_are_not_written_in_main_c():
    with open(os.path.join(SOURCE_DIR, "tools", "availctl", "main.c")) as f:
        manual = f.read().split("*/", 1)[0]
    for name in table():
        if name != "help":  # the summary names `availctl help [COMMAND]`
            assert synopsis(name) not in manual, name


def test_help_check_prints_checks_synopsis_and_help():
    r = availctl("help", "check")
    assert r.returncode == 0 and r.stderr == ""
    lines = r.stdout.splitlines()
    assert lines[0] == "usage: availctl check NAME...|-f FILE|- [--fresh] [--raw] [--json] [--deadline MS]"
    assert "--deadline MS bounds the wait" in r.stdout
    assert "Exit 0 when every" in r.stdout


def test_help_without_a_command_prints_the_usage_and_exits_0():
    r = availctl("help")
    assert r.returncode == 0 and r.stdout == availctl("--help").stdout


def test_help_of_an_unknown_command_exits_2():
    r = availctl("help", "nosuch")
    assert r.returncode == 2 and r.stdout == ""
    assert "availctl: unknown command 'nosuch'" in r.stderr and "usage: availctl" in r.stderr
    assert availctl("help", "check", "cache").returncode == 2


def test_an_unknown_command_exits_2_with_the_usage_on_stderr():
    r = availctl("-c", NO_CONFIG, "frobnicate", "x")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("availctl: unknown command 'frobnicate'\nusage: availctl ")
    for name in table():
        assert f"\n  {name} " in r.stderr


def test_no_command_exits_2_with_the_usage_on_stderr():
    r = availctl()
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("usage: availctl [-c FILE]")
    assert availctl("-c", NO_CONFIG).returncode == 2


def test_every_command_of_the_table_is_dispatched():
    # Without a configuration no command gets far (run starts nothing), but
    # each is found: none is an unknown command.
    for name in table():
        r = availctl("-c", NO_CONFIG, name)
        assert "unknown command" not in r.stderr, (name, r.stderr)
        assert r.returncode in (0, 1, 2), (name, r.returncode)


@pytest.mark.parametrize("args", [
    ["config"], ["config", "bogus"], ["config", "check", "a", "b"],
    ["cache"],
    ["check"], ["check", "--bogus", "a.de"], ["check", "--deadline", "0", "a.de"],
    ["classify"], ["classify", "a.de", "b", "c"],
    ["errors", "extra"], ["errors", "--bogus"],
    ["registries", "--bogus"], ["registries", "update-bootstrap"],
    ["metrics", "x"], ["run", "--bogus"],
])
def test_a_commands_usage_error_shows_its_synopsis_from_the_table(args):
    # Every command gets its own name as argv[0]: the usage line it prints
    # is the table's, and it says so before reading any configuration.
    r = availctl("-c", NO_CONFIG, *args)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines()[-1] == f"usage: availctl {synopsis(args[0])}"


def test_a_daemon_that_cannot_answer_is_named_with_why(make_cluster):
    # The control requests' one helper: the body when the daemon answers;
    # "availctl: availd-NAME: why" and exit 2 when it does not.
    c = make_cluster()
    c.start("errors")
    cache = c.start("cache")
    r = c.availctl("cache", "stats", check=0)
    assert r.stdout.startswith("0 entries")
    r = c.availctl("errors", "--counts", check=0)
    assert r.stdout.startswith("REGISTRY") and r.stdout.rstrip().endswith("events held")
    cache.stop()
    r = c.availctl("--timeout", "300", "cache", "stats", check=2)
    assert r.stdout == "" and r.stderr.startswith("availctl: availd-cache: ") and r.stderr.count("\n") == 1
    r = c.availctl("--timeout", "300", "status", "cache", "errors", check=1)
    assert re.search(r"^cache +down +\S", r.stdout, re.M)
    assert re.search(r"^errors +running", r.stdout, re.M), r.stdout
