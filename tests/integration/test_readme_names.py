"""The README's examples use names that exist: every `availctl COMMAND` in
its code (indented blocks and `code spans`) is a command availctl knows
(`availctl help COMMAND`), every querier instance it names
(`availd-querier@NAME`, `--group NAME`) is one the shipped config has
(`availd-querier -n --group NAME` accepts it), and every `systemctl` unit it
names is a unit of systemd/; and proto/README.md's table of error event
codes is the codes the daemons report."""
import os
import re
import subprocess

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("AVAILD_BUILD_DIR", os.path.join(TOP, "build"))
AVAILCTL = os.path.join(BUILD, "tools", "availctl", "availctl")
QUERIER = os.path.join(BUILD, "daemons", "availd-querier")
CONFIG = os.path.join(TOP, "config", "availd.yaml")
ENV = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")


def readme_code():
    """The README's code: indented block lines and `code spans`."""
    text = open(os.path.join(TOP, "README.md")).read()
    code = [line for line in text.split("\n") if line.startswith("    ")]
    code += re.findall(r"`([^`\n]+)`", text)
    return code


def placeholder(name):
    """GROUP, REGISTRY, INSTANCE, NAME...: instance names are lower case."""
    return any(c.isupper() for c in name)


def test_every_availctl_command_in_the_readme_exists():
    commands = set()
    for line in readme_code():
        for m in re.finditer(r"\bavailctl ([a-z][a-z-]*)", line):
            commands.add(m.group(1))
    assert len(commands) >= 8, commands
    unknown = [c for c in sorted(commands)
               if subprocess.run([AVAILCTL, "help", c], capture_output=True, env=ENV, timeout=60).returncode != 0]
    assert not unknown, f"README names availctl commands that do not exist: {unknown}"


def test_every_querier_instance_in_the_readme_is_in_the_shipped_config():
    names = set()
    for line in readme_code():
        names.update(re.findall(r"availd-querier@([A-Za-z0-9_.-]+)", line))
        names.update(re.findall(r"availd-querier [^|]*--(?:group|registry) ([A-Za-z0-9_.-]+)", line))
    names = {n for n in names if not placeholder(n)}
    assert names, "the README names no querier instance: the test would prove nothing"
    bad = {}
    for n in sorted(names):
        r = subprocess.run([QUERIER, "-n", "-c", CONFIG, "--group", n], capture_output=True, text=True, env=ENV,
                           timeout=60)
        if r.returncode != 0:
            bad[n] = r.stderr.strip()
    assert not bad, f"README names querier instances the shipped config lacks: {bad}"


def test_every_systemd_unit_in_the_readme_exists():
    units = set(os.listdir(os.path.join(TOP, "systemd")))
    named = set()
    for line in readme_code():
        for m in re.finditer(r"\bsystemctl [a-z-]+(?: --now)? ((?:availd[\w@.-]*\s*)+)", line):
            named.update(m.group(1).split())
    assert named, "the README names no unit"
    missing = []
    for u in sorted(named):
        unit = u if u.endswith((".target", ".socket", ".service")) else u + ".service"
        unit = re.sub(r"@.*\.(service)$", r"@.\1", unit)  # an instance: its template
        if unit not in units:
            missing.append(u)
    assert not missing, f"README names units systemd/ does not have: {missing}"


def reported_codes():
    """The codes the sources pass to av_report as string literals, and the
    journal's, which it picks by the failure (journal_describe_failure)."""
    codes = {}
    for base in ("daemons", "libcommon", "tools"):
        for root, _, files in os.walk(os.path.join(TOP, base)):
            for f in files:
                if not f.endswith(".c"):
                    continue
                path = os.path.join(root, f)
                text = open(path).read()
                for m in re.finditer(r"\bav_report\s*\(\s*[^,]+,\s*[^,]+,\s*[^,]+,\s*\"([a-z_]+)\"", text):
                    codes.setdefault(m.group(1), os.path.relpath(path, TOP))
                if f == "journal.c":
                    body = text[text.index("journal_describe_failure("):]
                    body = body[:body.index("\n}\n")]
                    for code in re.findall(r"return \"([a-z_]+)\"", body):
                        codes.setdefault(code, os.path.relpath(path, TOP))
    return codes


def test_every_error_event_code_is_in_the_protocol_table():
    """Monitoring matches on codes: proto/README.md's table of error event
    codes names every one a daemon reports, and nothing else."""
    text = open(os.path.join(TOP, "proto", "README.md")).read()
    table = text[text.index("| code | level | from | what happened |"):]
    documented = set()
    for row in table.split("\n")[2:]:
        if not row.startswith("|"):
            break
        documented.update(re.findall(r"`([a-z_]+)`", row.split("|")[1]))
    codes = reported_codes()
    assert len(codes) >= 15, codes
    undocumented = {c: where for c, where in codes.items() if c not in documented}
    assert not undocumented, f"error event codes missing from proto/README.md: {undocumented}"
    stale = documented - set(codes)
    assert not stale, f"proto/README.md documents codes no daemon reports: {stale}"
