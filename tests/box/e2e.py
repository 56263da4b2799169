#!/usr/bin/python3
"""End-to-end test of accio-server under a real systemd, run INSIDE the box.

    tests/box/harness run --units packaging --bin target/release/server:accio-server \\
        --config config/server.toml -- tests/box/e2e.py
    tests/box/harness run -- tests/box/e2e.py --deb target/debian/accio-server_*.deb
    tests/box/harness run --setup 'dpkg -i X.deb' -- tests/box/e2e.py --preinstalled
    tests/box/harness offline --units packaging --bin ... -- tests/box/e2e.py --offline

Prints one TAP-like line per check (ok N - ... / not ok N - ...), exits 1 if
any check failed. Refuses to run outside the box (ACCIO_BOX=1 is set by the
harness): it edits /etc, installs packages and stops units.
Python 3 standard library only.
"""

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import tomllib

SOCKET = "accio-server.socket"
SERVICE = "accio-server.service"
CONFIG = "/etc/accio-server/server.toml"
BIN = "/usr/bin/accio-server"
CLIENT = "/usr/bin/accio-client"
SAVE_DIR = "/var/lib/accio-server"       # StateDirectory=accio-server
POLICY = "/usr/sbin/policy-rc.d"
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
WAIT = 4.0          # seconds for any single asynchronous condition
IDLE = 0.5          # the idle_timeout set by the reload check
DEADLINE = time.monotonic() + 45


class Fatal(Exception):
    pass


class Plan:
    def __init__(self):
        self.n = 0
        self.failed = []

    def check(self, cond, desc, detail=None):
        self.n += 1
        if cond:
            print("ok %d - %s" % (self.n, desc))
        else:
            print("not ok %d - %s" % (self.n, desc))
            self.failed.append("%d - %s" % (self.n, desc))
            if detail:
                for line in str(detail).rstrip().splitlines()[-40:]:
                    print("#   " + line)
        sys.stdout.flush()
        return bool(cond)

    def skip(self, desc, why):
        self.n += 1
        print("ok %d - %s # SKIP %s" % (self.n, desc, why))
        sys.stdout.flush()

    def note(self, text):
        for line in str(text).rstrip().splitlines():
            print("# " + line)
        sys.stdout.flush()


T = Plan()


# ------------------------------------------------------------------ helpers
def run(argv, timeout=15, input=None):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input,
                           stdin=None if input is not None else subprocess.DEVNULL)
        return p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        return 124, "timeout: %s\n%s" % (" ".join(argv), e.stdout or "")


def show(unit, *props):
    rc, out = run(["systemctl", "show", unit] + ["-p" + p for p in props])
    d = {}
    for line in out.splitlines():
        k, _, v = line.partition("=")
        d[k] = v
    return d


def wait_for(fn, timeout=WAIT, interval=0.02):
    end = min(time.monotonic() + timeout, DEADLINE)
    while True:
        v = fn()
        if v or time.monotonic() >= end:
            return v
        time.sleep(interval)


def journal(*args):
    rc, out = run(["journalctl", "-b", "--no-pager", "-o", "json"] + list(args))
    entries = []
    for line in out.splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        m = e.get("MESSAGE")
        if isinstance(m, list):
            e["MESSAGE"] = bytes(m).decode(errors="replace")
        elif m is None:
            e["MESSAGE"] = ""
        entries.append(e)
    return entries


def syslog_lines(pid=None):
    es = [e for e in journal("-t", "accio-server", "_TRANSPORT=syslog")]
    if pid is not None:
        es = [e for e in es if e.get("_PID") == str(pid)]
    return es


def stdout_lines(unit=SERVICE):
    return [e["MESSAGE"] for e in journal("-u", unit) if e.get("_TRANSPORT") == "stdout"]


def by_prio(entries, prio):
    return [e for e in entries if e.get("PRIORITY") == str(prio)]


def main_pid(unit=SERVICE):
    try:
        return int(show(unit, "MainPID").get("MainPID", "0"))
    except ValueError:
        return 0


def listen_port():
    v = show(SOCKET, "Listen").get("Listen", "")
    m = re.findall(r":(\d+) \(Stream\)", v)
    return int(m[0]) if m else None


def listening(port):
    rc, out = run(["ss", "-ltnH"])
    return any(line.split()[3].rsplit(":", 1)[-1] == str(port)
               for line in out.splitlines() if len(line.split()) >= 4)


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        d = s.recv(n - len(buf))
        if not d:
            break
        buf += d
    return buf


def connect(host, port, timeout=5.0, source=None):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(timeout)
    if source:
        s.bind((source, 0))
    s.connect((host, port))
    return s


def transfer(s, nbytes):
    """Read the greeting, send nbytes, half-close, read to EOF.
    Returns (greeting, bytes after greeting, error or None)."""
    try:
        g = recv_exact(s, 7)
        data = (b"0123456789abcdef" * (nbytes // 16 + 1))[:nbytes]
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        rest = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            rest += d
        return g, rest, None
    except OSError as e:
        return None, None, e
    finally:
        s.close()


def client(host, port, nbytes, source=None):
    try:
        s = connect(host, port, source=source)
    except OSError as e:
        return None, None, e
    return transfer(s, nbytes)


def proc_status(pid):
    d = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                d[k] = v.strip()
    except OSError:
        pass
    return d


def mountinfo(pid):
    out = []
    try:
        with open("/proc/%d/mountinfo" % pid) as f:
            for line in f:
                pre, post = line.split(" - ", 1)
                pre = pre.split()
                out.append({"root": pre[3], "target": pre[4], "opts": pre[5].split(","),
                            "fstype": post.split()[0]})
    except OSError:
        pass
    return out


def status_text(served, active, nbytes):
    """The STATUS= line of src/server.rs (status_line)."""
    return "%d connections served, %d active, %d bytes received" % (served, active, nbytes)


def set_top_level(text, key, value):
    """Set a top-level TOML key (before the first [table])."""
    out, top = [], True
    for line in text.splitlines():
        if re.match(r"\s*\[", line):
            top = False
        if top and re.match(r"\s*%s\s*=" % re.escape(key), line):
            continue
        out.append(line)
    return "%s = %s\n" % (key, value) + "\n".join(out) + "\n"


def diagnostics():
    rc, out = run(["systemctl", "status", "--no-pager", "-l", "-n", "0", SOCKET, SERVICE])
    T.note("systemctl status:\n" + out)
    rc, out = run(["journalctl", "-b", "--no-pager", "-n", "80", "-o", "short-monotonic"])
    T.note("journalctl -b (tail):\n" + out)


# ---------------------------------------------------------- offline checks
def unit_dir():
    for d in ("/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system"):
        if os.path.isfile(os.path.join(d, SERVICE)) and not os.path.islink(os.path.join(d, SERVICE)):
            return d
    raise Fatal("no %s installed in the box" % SERVICE)


def offline(args):
    if args.deb:
        install_deb(args.deb, live=False)
    d = unit_dir()
    units = [os.path.join(d, SOCKET), os.path.join(d, SERVICE)]
    T.note("units in %s" % d)
    rc, out = run(["systemd-analyze", "verify"] + units, timeout=30)
    T.check(rc == 0 and not out.strip(), "systemd-analyze verify: rc 0, no warnings", out)
    rc, out = run(["systemd-analyze", "security", "--offline=true", "--no-pager",
                   "--threshold=%d" % round(args.max_score * 10), units[1]], timeout=30)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out)
    score = float(m.group(1)) if m else None
    T.check(rc == 0 and score is not None and score <= args.max_score,
            "systemd-analyze security --offline=true: exposure %s <= %.1f" % (score, args.max_score),
            "\n".join(l for l in out.splitlines() if "\u2717" in l or "Overall" in l) or out)
    if score is not None:
        T.note("exposure score %.1f" % score)
    for name in (SOCKET, SERVICE):
        src = os.path.join(REPO, "packaging", name)
        if os.path.isfile(src):
            with open(src, "rb") as a, open(os.path.join(d, name), "rb") as b:
                T.check(a.read() == b.read(), "installed %s is packaging/%s of this checkout" % (name, name))


# ------------------------------------------------------------- deb install
def disable_policy_rc_d():
    if os.path.exists(POLICY):
        # The box is an overlay of the host, and a Docker-style host has a
        # policy-rc.d that forbids starting or stopping services (exit 101).
        # deb-systemd-invoke obeys it. Disable it in the box only, so that the
        # maintainer scripts act as on a live Debian system.
        os.rename(POLICY, POLICY + ".box-disabled")
        T.note("%s disabled inside the box (the host has one)" % POLICY)


def install_deb(deb, live):
    # The man-db trigger would rebuild the whole man database (seconds); the
    # box's /var/lib is a throw-away overlay, so switch it off here.
    try:
        os.remove("/var/lib/man-db/auto-update")
    except OSError:
        pass
    t = time.monotonic()
    rc, out = run(["dpkg", "--force-confdef", "--force-confold", "-i", deb], timeout=60)
    if not T.check(rc == 0, "dpkg -i %s (%.1fs)" % (os.path.basename(deb), time.monotonic() - t), out):
        raise Fatal("package did not install")
    check_deb_files()
    wants = "/etc/systemd/system/sockets.target.wants/" + SOCKET
    T.check(os.path.islink(wants), "postinst enabled %s (%s)" % (SOCKET, wants))
    if live:
        rc, out = run(["systemctl", "is-enabled", SOCKET])
        T.check(out.strip() == "enabled", "systemctl is-enabled %s: enabled" % SOCKET, out)


def check_deb_files():
    missing = []
    for p in (BIN, "/usr/lib/systemd/system/" + SOCKET, "/usr/lib/systemd/system/" + SERVICE,
              CONFIG, "/usr/share/doc/accio-server/README.md"):
        if not os.path.isfile(p):
            missing.append(p)
    man = [p for p in ("/usr/share/man/man8/accio-server.8", "/usr/share/man/man8/accio-server.8.gz")
           if os.path.isfile(p)]
    if not man:
        missing.append("/usr/share/man/man8/accio-server.8[.gz]")
    T.check(not missing and os.access(BIN, os.X_OK), "package files installed", "missing: %s" % missing)
    rc, out = run(["dpkg-query", "-W", "-f=${Conffiles}", "accio-server"])
    T.check(CONFIG in out, "%s is a conffile" % CONFIG, out)
    check_deb_docs()


# What the README's Install section promises the package installs, as
# (installed path, source in the checkout, gzipped by cargo-deb).
DEB_DOCS = [
    ("/usr/share/man/man8/accio-server.8.gz", "doc/accio-server.8", True),
    ("/usr/share/man/man1/accio-client.1.gz", "doc/accio-client.1", True),
    ("/usr/share/man/man5/accio-server.toml.5.gz", "doc/accio-server.toml.5", True),
    ("/usr/share/bash-completion/completions/accio-server", "doc/completions/bash/accio-server", False),
    ("/usr/share/bash-completion/completions/accio-client", "doc/completions/bash/accio-client", False),
    ("/usr/share/zsh/vendor-completions/_accio-server", "doc/completions/zsh/_accio-server", False),
    ("/usr/share/zsh/vendor-completions/_accio-client", "doc/completions/zsh/_accio-client", False),
    ("/usr/share/fish/vendor_completions.d/accio-server.fish", "doc/completions/fish/accio-server.fish", False),
    ("/usr/share/fish/vendor_completions.d/accio-client.fish", "doc/completions/fish/accio-client.fish", False),
]


def check_deb_docs():
    """The manual pages (including accio-server.toml(5)) and the bash, zsh and
    fish completions of both programs are installed, with the content of
    doc/ in this checkout, and bash takes the completions."""
    import gzip
    missing, differ = [], []
    for path, src, gz in DEB_DOCS:
        try:
            with open(path, "rb") as f:
                data = f.read()
            if gz:
                data = gzip.decompress(data)
        except (OSError, EOFError, gzip.BadGzipFile):
            missing.append(path)
            continue
        try:
            with open(os.path.join(REPO, src), "rb") as f:
                if f.read() != data:
                    differ.append("%s (from %s)" % (path, src))
        except OSError:
            pass   # no checkout beside this script: presence is all we can check
    T.check(not missing, "the package installs the manual pages and the bash, zsh and fish completions "
            "of accio-server and accio-client (%d files)" % len(DEB_DOCS), "missing: %s" % missing)
    T.check(not differ, "installed manual pages and completions are doc/ of this checkout",
            "different: %s" % differ)
    for prog in ("accio-server", "accio-client"):
        rc, out = run(["bash", "-c", "source /usr/share/bash-completion/completions/%s && complete -p %s"
                       % (prog, prog)])
        T.check(rc == 0 and re.search(r"^complete\b.* -F \S+ (.* )?%s$" % re.escape(prog), out.strip()),
                "bash completion for %s loads (complete -p: %s)" % (prog, out.strip()), out)


# ----------------------------------------------------------------- run mode
def live(args):
    deb_mode = bool(args.deb or args.preinstalled)
    if deb_mode:
        disable_policy_rc_d()
    if args.deb:
        install_deb(args.deb, live=True)
        T.check(show(SOCKET, "ActiveState")["ActiveState"] == "active",
                "postinst started %s on a live systemd" % SOCKET)
        T.check(show(SERVICE, "ActiveState")["ActiveState"] == "inactive",
                "postinst did not start %s" % SERVICE)
    if args.preinstalled:
        check_deb_files()
        rc, out = run(["systemctl", "is-enabled", SOCKET])
        T.check(out.strip() == "enabled", "pre-boot dpkg -i enabled %s" % SOCKET, out)
        st = wait_for(lambda: show(SOCKET, "ActiveState")["ActiveState"] == "active")
        T.check(st, "%s was started at boot (sockets.target)" % SOCKET)
    if deb_mode:
        frag = show(SOCKET, "FragmentPath")["FragmentPath"]
        T.check(frag.startswith(("/usr/lib/systemd/system/", "/lib/systemd/system/")),
                "the package's unit is in use (%s)" % frag)

    # Before the first connection -----------------------------------------
    rc, out = run(["systemctl", "start", SOCKET])
    T.check(rc == 0, "[1] systemctl start %s" % SOCKET, out)
    s1, s2 = show(SOCKET, "ActiveState")["ActiveState"], show(SERVICE, "ActiveState")["ActiveState"]
    T.check(s1 == "active" and s2 == "inactive",
            "[2] socket active (%s), service inactive (%s) before any connection" % (s1, s2))
    port = listen_port()
    T.check(port is not None and listening(port), "[3] port %s listening (ss -ltnH)" % port,
            run(["ss", "-ltnH"])[1])
    if port is None:
        raise Fatal("no port")

    # First connections ---------------------------------------------------
    sizes = {"127.0.0.1": 1000, "::1": 123457}
    socks = {}
    for host in sizes:
        try:
            socks[host] = connect(host, port)
        except OSError as e:
            socks[host] = e
    results = {}
    for host, n in sizes.items():
        s = socks[host]
        results[host] = transfer(s, n) if not isinstance(s, OSError) else (None, None, s)
    for host, (g, rest, err) in results.items():
        T.check(g == b"accio\r\n" and rest == b"" and err is None,
                "[4] client via %s: greeting %r, sent %d bytes, clean close" % (host, g, sizes[host]),
                "error: %r, after greeting: %r" % (err, rest))
    expected_stdout = [str(n) for n in sizes.values()]
    st = show(SERVICE, "ActiveState", "SubState", "MainPID")
    pid = int(st.get("MainPID", "0") or 0)
    T.check(st.get("ActiveState") == "active" and st.get("SubState") == "running" and pid > 0,
            "[5] service active/running, MainPID %d" % pid, st)
    total = sum(sizes.values())
    want = status_text(2, 0, total)
    text = wait_for(lambda: show(SERVICE, "StatusText")["StatusText"] == want)
    T.check(text, "[6] StatusText=%r" % want, "got %r" % show(SERVICE, "StatusText")["StatusText"])
    text = want
    status_before = text

    # Sandbox of the running process ---------------------------------------
    ps = proc_status(pid)
    uid = int(ps.get("Uid", "0").split()[0] or 0)
    rc, pw = run(["getent", "passwd", str(uid)])
    T.check(61184 <= uid <= 65519 and rc == 0 and pw.split(":")[0] == "accio-server",
            "[7] dynamic user: uid %d, name %r" % (uid, pw.split(":")[0]), pw)
    T.check(ps.get("NoNewPrivs") == "1" and ps.get("Seccomp") == "2",
            "[8] NoNewPrivs %s, Seccomp %s" % (ps.get("NoNewPrivs"), ps.get("Seccomp")))
    caps = {k: ps.get(k) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}
    T.check(all(v == "0000000000000000" for v in caps.values()),
            "[8] empty capability sets (CapEff %s, CapBnd %s)" % (caps["CapEff"], caps["CapBnd"]), caps)
    mi = mountinfo(pid)
    root = [m for m in mi if m["target"] == "/"]
    T.check(root and "ro" in root[-1]["opts"], "[9] / is read-only for the service (ProtectSystem=strict)",
            root)
    ns = {}
    for n in ("mnt", "user", "uts", "net"):
        try:
            ns[n] = os.readlink("/proc/%d/ns/%s" % (pid, n)) != os.readlink("/proc/1/ns/%s" % n)
        except OSError:
            ns[n] = None
    T.check(ns["mnt"] and ns["user"] and ns["uts"],
            "[10] own mount, user (PrivateUsers=) and UTS (ProtectHostname=) namespaces", ns)
    tmp = [m for m in mi if m["target"] == "/tmp"]
    T.check(tmp and "systemd-private" in tmp[-1]["root"], "[10] private /tmp (PrivateTmp=)", tmp)
    sroot = "/proc/%d/root" % pid
    T.check(os.path.exists(sroot + "/dev/null") and not os.path.exists(sroot + "/dev/console"),
            "[10] private /dev without devices (PrivateDevices=)")
    try:
        home = os.stat(sroot + "/home").st_mode & 0o777
    except OSError:
        home = None
    T.check(home == 0, "[10] /home inaccessible (ProtectHome=yes, mode %s)" % (oct(home) if home is not None else home))
    sd = "/var/lib/private/accio-server"
    T.check(os.path.isdir(sd) and os.stat(sd).st_uid == uid and os.path.islink("/var/lib/accio-server"),
            "StateDirectory= %s owned by the dynamic user" % sd)

    # Journal -----------------------------------------------------------------
    def start_line():
        return [e for e in by_prio(syslog_lines(pid), 5) if re.search(r"\bpid %d\b" % pid, e["MESSAGE"])]
    sl = wait_for(start_line)
    T.check(sl, "[11] start line at notice (5) with 'pid %d': %r" % (pid, sl[0]["MESSAGE"] if sl else None),
            "\n".join("%s %s" % (e.get("PRIORITY"), e["MESSAGE"]) for e in syslog_lines()))
    conn = wait_for(lambda: (lambda c: c if len(c) >= 2 else [])(by_prio(syslog_lines(pid), 6)))
    T.check(len(conn) == 2, "[11] one info (6) line per connection (%d)" % len(conn),
            "\n".join("%s %s" % (e.get("PRIORITY"), e["MESSAGE"]) for e in syslog_lines(pid)))
    if conn:
        T.note("connection line: %s" % conn[0]["MESSAGE"])
    fac = {e.get("SYSLOG_FACILITY") for e in syslog_lines(pid)}
    T.check(fac == {"3"}, "[11] syslog facility daemon (3): %s" % sorted(fac))
    out = wait_for(lambda: (lambda l: l if sorted(l) == sorted(expected_stdout) else [])(stdout_lines()))
    T.check(out, "[12] journalctl -u: stdout is exactly one count line per connection %s" % expected_stdout,
            "got %r" % stdout_lines())

    # Reload ------------------------------------------------------------------
    with open(CONFIG) as f:
        orig_config = f.read()
    notices = len(by_prio(syslog_lines(pid), 5))
    with open(CONFIG, "w") as f:
        f.write(set_top_level(orig_config, "idle_timeout", '"%dms"' % (IDLE * 1000)))
    rc, out = run(["systemctl", "reload", SERVICE])
    T.check(rc == 0, "[13] idle_timeout = \"500ms\"; systemctl reload %s" % SERVICE, out)
    reloaded = wait_for(lambda: len(by_prio(syslog_lines(pid), 5)) > notices)
    T.check(reloaded, "[14] reload line at notice (5) in the journal",
            "\n".join("%s %s" % (e.get("PRIORITY"), e["MESSAGE"]) for e in syslog_lines(pid)))
    T.check(main_pid() == pid, "[14] MainPID unchanged by reload (%d)" % main_pid())
    back = wait_for(lambda: (lambda s: s if s.get("ActiveState") == "active" and s.get("SubState") == "running"
                             and s.get("StatusText") == status_before else None)(
        show(SERVICE, "ActiveState", "SubState", "StatusText")))
    T.check(back, "[14] back to active/running with StatusText restored",
            show(SERVICE, "ActiveState", "SubState", "StatusText"))
    warnings = len(by_prio(syslog_lines(pid), 4))
    t0 = time.monotonic()
    how = None
    try:
        s = connect("127.0.0.1", port)
        s.settimeout(5)
        g = recv_exact(s, 7)
        try:
            d = s.recv(100)
            how = "EOF" if d == b"" else "data %r" % d
        except ConnectionResetError:
            how = "reset"
        except socket.timeout:
            how = "still open after 5 s"
        s.close()
    except OSError as e:
        g, how = None, "error %r" % e
    dt = time.monotonic() - t0
    T.check(g == b"accio\r\n" and how in ("EOF", "reset") and 0.3 <= dt <= 3,
            "[15] silent client cut off after %.2fs (%s), not 10 s" % (dt, how))
    expected_stdout.append("ERROR")
    out = wait_for(lambda: (lambda l: l if sorted(l) == sorted(expected_stdout) else [])(stdout_lines()))
    T.check(out, "[15] its stdout line is ERROR", "got %r" % stdout_lines())
    w = wait_for(lambda: len(by_prio(syslog_lines(pid), 4)) > warnings)
    T.check(w, "[15] a warning (4) line for the timeout")

    # An invalid file changes nothing.
    errs = len(by_prio(syslog_lines(pid), 3))
    with open(CONFIG, "w") as f:
        f.write(set_top_level(orig_config, "idle_timeout", '"soon"'))
    rc, out = run(["systemctl", "reload", SERVICE])
    e = wait_for(lambda: len(by_prio(syslog_lines(pid), 3)) > errs)
    T.check(e and main_pid() == pid, "[16] invalid config on reload: err (3) logged, same PID",
            "\n".join("%s %s" % (x.get("PRIORITY"), x["MESSAGE"]) for x in syslog_lines(pid)[-5:]))
    active = wait_for(lambda: show(SERVICE, "ActiveState")["ActiveState"] == "active")
    g, rest, err = client("127.0.0.1", port, 777)
    expected_stdout.append("777")
    T.check(active and g == b"accio\r\n" and err is None, "[16] still serving after the failed reload")
    # Restore the original file (and configuration) for the rest of the test.
    with open(CONFIG, "w") as f:
        f.write(orig_config)
    notices = len(by_prio(syslog_lines(pid), 5))
    run(["systemctl", "reload", SERVICE])
    wait_for(lambda: len(by_prio(syslog_lines(pid), 5)) > notices)
    wait_for(lambda: show(SERVICE, "ActiveState")["ActiveState"] == "active")

    # Stop and exit status -----------------------------------------------------
    notices = len(by_prio(syslog_lines(pid), 5))
    t0 = time.monotonic()
    rc, out = run(["systemctl", "stop", SERVICE])
    dt = time.monotonic() - t0
    st = show(SERVICE, "ExecMainStatus", "ExecMainCode", "Result", "ActiveState")
    T.check(rc == 0 and st.get("ExecMainStatus") == "0" and st.get("ExecMainCode") == "1"
            and st.get("Result") == "success",
            "[17] systemctl stop (%.2fs): ExecMainStatus=%s ExecMainCode=%s Result=%s"
            % (dt, st.get("ExecMainStatus"), st.get("ExecMainCode"), st.get("Result")), out)
    stopped = wait_for(lambda: len(by_prio(syslog_lines(pid), 5)) > notices)
    T.check(stopped, "[17] stop line at notice (5) in the journal")
    T.check(show(SOCKET, "ActiveState")["ActiveState"] == "active" and listening(port),
            "[17] the socket still listens after the service stopped")

    # Re-activation, with a 1 s watchdog for this start ---------------------------
    wd = show(SERVICE, "WatchdogUSec")["WatchdogUSec"]
    T.check(wd not in ("", "0", "infinity"), "the unit sets WatchdogSec= (%s)" % wd)
    dropin = "/run/systemd/system/%s.d" % SERVICE
    os.makedirs(dropin, exist_ok=True)
    with open(dropin + "/50-e2e-watchdog.conf", "w") as f:
        f.write("[Service]\nWatchdogSec=1s\n")
    run(["systemctl", "daemon-reload"])
    g, rest, err = client("::1", port, 4242)
    expected_stdout.append("4242")
    pid2 = main_pid()
    T.check(g == b"accio\r\n" and err is None and pid2 not in (0, pid),
            "[19] a new connection re-activates the service (MainPID %d -> %d)" % (pid, pid2), err)
    out = wait_for(lambda: (lambda l: l if sorted(l) == sorted(expected_stdout) else [])(stdout_lines()))
    T.check(out, "[19] stdout lines so far: %s" % expected_stdout, "got %r" % stdout_lines())
    try:
        with open("/proc/%d/environ" % pid2, "rb") as f:
            env = f.read().split(b"\0")
    except OSError:
        env = []
    T.check(b"WATCHDOG_USEC=1000000" in env, "watchdog: WATCHDOG_USEC passed to the service")
    stamps = set()
    end = time.monotonic() + 1.3
    while time.monotonic() < end:
        stamps.add(show(SERVICE, "WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"])
        time.sleep(0.1)
    st = show(SERVICE, "ActiveState", "MainPID", "NRestarts")
    T.check(len(stamps) >= 2 and st.get("MainPID") == str(pid2) and st.get("ActiveState") == "active",
            "watchdog: pings arrive (%d distinct WatchdogTimestamp in 1.3 s with WatchdogSec=1s), "
            "same PID, still active" % len(stamps), st)
    os.remove(dropin + "/50-e2e-watchdog.conf")
    run(["systemctl", "daemon-reload"])

    # Not only localhost: a client from a non-loopback address is served.
    rc, out = run(["ip", "addr", "add", "192.0.2.10/32", "dev", "lo"])
    if rc == 0:
        g, rest, err = client("192.0.2.10", port, 10, source="192.0.2.10")
        expected_stdout.append("10")
        T.check(g == b"accio\r\n" and err is None,
                "a client from a non-loopback address (192.0.2.10) is served", err)
        run(["ip", "addr", "del", "192.0.2.10/32", "dev", "lo"])
    else:
        T.skip("a client from a non-loopback address is served", "cannot add an address: " + out.strip())

    # Stop while a client is connected ---------------------------------------------
    try:
        s = connect("127.0.0.1", port)
        g = recv_exact(s, 7)
        s.sendall(b"x" * 100)
    except OSError as e:
        s, g = None, None
    time.sleep(0.05)
    t0 = time.monotonic()
    rc, out = run(["systemctl", "stop", SERVICE])
    dt = time.monotonic() - t0
    st = show(SERVICE, "ExecMainStatus", "ExecMainCode", "Result")
    how = None
    if s:
        try:
            s.settimeout(2)
            how = "EOF" if s.recv(100) == b"" else "data"
        except ConnectionResetError:
            how = "reset"
        except OSError as e:
            how = repr(e)
        s.close()
    expected_stdout.append("ERROR")
    T.check(g == b"accio\r\n" and rc == 0 and st.get("ExecMainStatus") == "0" and st.get("Result") == "success"
            and how in ("EOF", "reset"),
            "[18] stop with a client connected (%.2fs): client sees %s, ExecMainStatus=%s Result=%s"
            % (dt, how, st.get("ExecMainStatus"), st.get("Result")), out)
    out = wait_for(lambda: (lambda l: l if sorted(l) == sorted(expected_stdout) else [])(stdout_lines()))
    T.check(out, "[18] that connection's stdout line is ERROR; all stdout lines %s" % expected_stdout,
            "got %r" % stdout_lines())

    # Nothing unexpected at err or worse; no restarts.
    bad = [e["MESSAGE"] for e in syslog_lines() if e.get("PRIORITY") in ("0", "1", "2", "3")]
    T.check(len(bad) == 1, "exactly one err-or-worse syslog line (the failed reload)", "\n".join(bad))
    T.check(show(SERVICE, "NRestarts")["NRestarts"] in ("0", ""), "no automatic restarts (NRestarts=0)")

    # Socket stop closes the port ------------------------------------------------------
    rc, out = run(["systemctl", "stop", SOCKET])
    refused = []
    for host in ("127.0.0.1", "::1"):
        try:
            connect(host, port, timeout=2).close()
            refused.append(False)
        except ConnectionRefusedError:
            refused.append(True)
        except OSError:
            refused.append(False)
    T.check(rc == 0 and not listening(port) and all(refused),
            "[20] systemctl stop %s: port %d closed, connects refused" % (SOCKET, port), out)

    # Without the socket unit: the server binds the config's port itself -----------
    self_bind(port)

    # A configuration error (78) is not restarted (RestartPreventExitStatus=).
    with open(CONFIG) as f:
        orig_config = f.read()
    with open(CONFIG, "w") as f:
        f.write(set_top_level(orig_config, "no_such_key", "1"))
    rc, out = run(["systemctl", "start", SERVICE])
    st = wait_for(lambda: (lambda s: s if s.get("ActiveState") in ("failed", "inactive") else None)(
        show(SERVICE, "ActiveState", "SubState", "Result", "ExecMainStatus", "NRestarts")))
    st = st or show(SERVICE, "ActiveState", "SubState", "Result", "ExecMainStatus", "NRestarts")
    T.check(rc != 0 and st.get("ExecMainStatus") == "78" and st.get("SubState") == "failed"
            and st.get("Result") == "exit-code",
            "bad configuration: start fails with 78 and is not restarted (%s)" % st, out)
    with open(CONFIG, "w") as f:
        f.write(orig_config)
    run(["systemctl", "stop", SOCKET])
    run(["systemctl", "reset-failed", SERVICE, SOCKET])

    # save_dir in the state directory, with accio-client ---------------------------
    if os.access(CLIENT, os.X_OK):
        saving(port)
    else:
        T.skip("save_dir = %r: uploads with accio-client" % SAVE_DIR, "no %s in the box" % CLIENT)

    if deb_mode and not args.keep_installed:
        reinstall_and_purge(args, port)


def saving(port):
    """save_dir = "/var/lib/accio-server" in the installed config: accio-client
    uploads land as N.file in the StateDirectory=, byte for byte, owned by the
    service's dynamic user, and the numbering survives a service restart."""
    with open(CONFIG) as f:
        orig_config = f.read()
    try:
        _saving(port, orig_config)
    finally:
        # Restore the configuration, and leave socket and service stopped as
        # the checks before left them (the upgrade/purge checks follow).
        with open(CONFIG, "w") as f:
            f.write(orig_config)
        run(["systemctl", "stop", SERVICE, SOCKET])
        run(["systemctl", "reset-failed", SERVICE, SOCKET])


def _saving(port, orig_config):
    # The files live in /var/lib/private/accio-server; /var/lib/accio-server is
    # systemd's symlink to it (DynamicUser=). Follow it as systemd made it.
    with open(CONFIG, "w") as f:
        f.write(set_top_level(orig_config, "save_dir", '"%s"' % SAVE_DIR))
    rc, out = run(["systemctl", "restart", SOCKET, SERVICE])
    st = show(SERVICE, "ActiveState", "SubState", "MainPID")
    pid = int(st.get("MainPID", "0") or 0)
    T.check(rc == 0 and st.get("ActiveState") == "active" and pid > 0,
            "[save] save_dir = %r; systemctl restart %s %s: active, MainPID %d" % (SAVE_DIR, SOCKET, SERVICE, pid),
            "%s\n%s" % (out, st))
    if pid <= 0:
        diag = "\n".join("%s %s" % (e.get("PRIORITY"), e["MESSAGE"]) for e in journal("-u", SERVICE)[-15:])
        raise Fatal("the service did not start with save_dir set:\n" + diag)

    def path(n):
        return os.path.join(SAVE_DIR, "%d.file" % n)

    def saved():
        try:
            return sorted(n for n in os.listdir(SAVE_DIR) if n.endswith(".file"))
        except OSError:
            return None
    before = saved()
    T.check(os.path.islink(SAVE_DIR) and before == [],
            "[save] %s -> %s exists, no N.file yet" % (SAVE_DIR, os.path.realpath(SAVE_DIR)), before)

    def read(p):
        try:
            with open(p, "rb") as f:
                return f.read()
        except OSError:
            return None

    def upload(content, name):
        src = os.path.join("/tmp", name)   # the box's own /tmp
        with open(src, "wb") as f:
            f.write(content)
        t = time.monotonic()
        rc, out = run([CLIENT, "127.0.0.1", str(port), src], timeout=15)
        return rc, out, time.monotonic() - t

    def stdout_since(k):
        return stdout_lines()[k:]

    def service_uid():
        p = main_pid()
        u = proc_status(p).get("Uid", "").split() if p > 0 else []
        return int(u[0]) if u else None

    # Two uploads of different content: 3 MiB of random bytes, then nothing.
    uploads = {1: os.urandom(3 << 20), 2: b""}
    nlines = len(stdout_lines())
    for n, content in uploads.items():
        rc, out, dt = upload(content, "upload-%d" % n)
        T.check(rc == 0, "[save] accio-client 127.0.0.1 %d FILE (%d bytes): exit 0 (%.2fs)"
                % (port, len(content), dt), "exit %d: %s" % (rc, out))
    got = {n: wait_for(lambda n=n: read(path(n)) == uploads[n]) for n in uploads}
    for n, content in uploads.items():
        data = read(path(n))
        T.check(got[n], "[save] %s is byte-identical to upload %d (%d bytes)" % (path(n), n, len(content)),
                "got %s; files: %s" % (None if data is None else "%d bytes" % len(data), saved()))
    uid = service_uid()
    owners = {n: (os.stat(path(n)).st_uid if os.path.exists(path(n)) else None) for n in uploads}
    T.check(uid not in (None, 0) and all(o == uid for o in owners.values()),
            "[save] 1.file, 2.file owned by the service's dynamic uid %s (%s)" % (uid, owners))
    want = [str(len(c)) for c in uploads.values()]
    lines = wait_for(lambda: (lambda l: l if l == want else [])(stdout_since(nlines)))
    T.check(lines, "[save] journalctl -u %s: count lines %s" % (SERVICE, want),
            "got %r" % stdout_since(nlines))
    T.check(saved() == ["1.file", "2.file"], "[save] nothing else in %s (%s)" % (SAVE_DIR, saved()))

    # After a service restart the numbering continues; the old files stay.
    rc, out = run(["systemctl", "restart", SERVICE])
    pid2 = main_pid()
    T.check(rc == 0 and pid2 not in (0, pid), "[save] systemctl restart %s (MainPID %d -> %d)"
            % (SERVICE, pid, pid2), out)
    uploads[3] = os.urandom(100000) + b"accio\r\n"
    nlines = len(stdout_lines())
    rc, out, dt = upload(uploads[3], "upload-3")
    T.check(rc == 0, "[save] accio-client after the restart (%d bytes): exit 0 (%.2fs)" % (len(uploads[3]), dt),
            "exit %d: %s" % (rc, out))
    ok = wait_for(lambda: read(path(3)) == uploads[3])
    T.check(ok, "[save] the numbering continues: %s is byte-identical to upload 3" % path(3),
            "files: %s" % saved())
    T.check(all(read(path(n)) == uploads[n] for n in (1, 2)) and saved() == ["1.file", "2.file", "3.file"],
            "[save] 1.file, 2.file unchanged by the restart (%s)" % saved())
    uid2 = service_uid()
    owners = {n: (os.stat(path(n)).st_uid if os.path.exists(path(n)) else None) for n in uploads}
    T.check(uid2 not in (None, 0) and all(o == uid2 for o in owners.values()),
            "[save] all files owned by the restarted service's dynamic uid %s (%s)" % (uid2, owners))
    lines = wait_for(lambda: (lambda l: l if l == [str(len(uploads[3]))] else [])(stdout_since(nlines)))
    T.check(lines, "[save] journal count line %s after the restart" % len(uploads[3]),
            "got %r" % stdout_since(nlines))

    documented_journal_commands([str(len(uploads[n])) for n in sorted(uploads)], pid2)


COUNT_LINE = re.compile(r"^(\d+|ERROR)$")
# journalctl's default ("short") output: "Dec 06 23:10:00 host IDENT[PID]: MESSAGE".
SHORT_LINE = re.compile(r"^\w{3} [ \d]\d \d\d:\d\d:\d\d \S+ ([^\s\[:]+)(?:\[(\d+)\])?: (.*)$")


def run_stdout(argv, timeout=15):
    """Run argv as a user would; return (rc, stdout lines, stderr)."""
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        return p.returncode, p.stdout.splitlines(), p.stderr
    except subprocess.TimeoutExpired:
        return 124, [], "timeout: %s" % " ".join(argv)


def short_entries(lines):
    """(identifier, pid, message) per entry of journalctl's short output;
    journalctl's own "-- ... --" notes are left out, anything else that does
    not parse is returned as (None, None, line)."""
    out = []
    for line in lines:
        if line.startswith("-- ") and line.endswith(" --"):
            continue
        m = SHORT_LINE.match(line)
        out.append((m.group(1), m.group(2), m.group(3)) if m else (None, None, line))
    return out


def documented_journal_commands(saved_counts, pid):
    """The journalctl commands of the README's "Reading the logs", run exactly
    as written against the packaged service after the uploads: the counts-only
    command prints exactly the count lines (and, as documented, the ERROR:
    line of the start this test made fail with a bad configuration: stderr is
    the same journal stream), the diagnostics-only one the server's own lines
    and no count line, and -p warning no count line."""
    # Counts only: exactly the service's stdout stream, in order: count lines,
    # ending with the counts of the uploads just made, and the one ERROR: line
    # of the failed start, nothing else.
    argv = ["journalctl", "-u", "accio-server", "_TRANSPORT=stdout", "-o", "cat"]
    want = stdout_lines()

    def counts_of(lines):
        return [l for l in lines if COUNT_LINE.match(l)]

    def counts_only():
        rc, lines, err = run_stdout(argv)
        ok = rc == 0 and lines == want and counts_of(lines)[-len(saved_counts):] == saved_counts
        return (rc, lines, err) if ok else None
    got = wait_for(counts_only) or run_stdout(argv)
    rc, lines, err = got
    counts = counts_of(lines)
    others = [l for l in lines if not COUNT_LINE.match(l)]
    T.check(rc == 0 and lines == want and counts[-len(saved_counts):] == saved_counts
            and len(others) == 1 and others[0].startswith("ERROR: invalid configuration file "),
            "[logs] %s: the service's %d count lines, ending %s, and the ERROR: line of the failed start, "
            "nothing else" % (" ".join(argv), len(counts), saved_counts),
            "rc %d, stderr %r\ngot  %r\nwant %r" % (rc, err, lines, want))

    # Diagnostics only: the start line and one line per connection of this
    # service process, every line from accio-server, no bare count line.
    argv = ["journalctl", "-u", "accio-server", "_TRANSPORT=syslog"]
    started = re.compile(r"^started accio-server \S+: listening on .*\bpid %d\b" % pid)
    conn = re.compile(r"^connection \d+ from 127\.0\.0\.1:\d+: closed by client, %s bytes in "
                      % re.escape(saved_counts[-1]))

    def diagnostics_only():
        rc, lines, err = run_stdout(argv)
        es = short_entries(lines)
        ok = (rc == 0 and any(started.match(m) for _, p, m in es)
              and any(conn.match(m) and p == str(pid) for _, p, m in es))
        return (rc, es, err) if ok else None
    got = wait_for(diagnostics_only)
    rc, lines, err = run_stdout(argv)
    es = short_entries(lines)
    T.check(bool(got), "[logs] %s: the start line and the connection line of MainPID %d"
            % (" ".join(argv), pid), "rc %d, stderr %r\n%s" % (rc, err, "\n".join(lines[-30:])))
    bare = [m for _, _, m in es if COUNT_LINE.match(m)]
    other = [(i, m) for i, _, m in es if i != "accio-server"]
    T.check(rc == 0 and not bare and not other and len(es) > 0,
            "[logs] %s: %d lines, all from accio-server, no bare count line" % (" ".join(argv), len(es)),
            "count lines: %r\nother identifiers: %r" % (bare, other))

    # Only problems: no count line (stdout is logged at info); the warnings
    # and errors of this boot (the idle timeout, the failed reload) are there.
    argv = ["journalctl", "-u", "accio-server", "-p", "warning"]
    rc, lines, err = run_stdout(argv)
    es = short_entries(lines)
    bare = [m for _, _, m in es if COUNT_LINE.match(m)]
    ours = [m for i, _, m in es if i == "accio-server"]
    T.check(rc == 0 and not bare and any("idle timeout" in m for m in ours),
            "[logs] %s: %d lines, the idle timeout warning among them, no count line"
            % (" ".join(argv), len(es)),
            "rc %d, stderr %r\ncount lines: %r\n%s" % (rc, err, bare, "\n".join(lines[-30:])))


def self_bind(default_port):
    with open(CONFIG, "rb") as f:
        cfg = tomllib.load(f)
    argv = [BIN, "--config", CONFIG]
    port = cfg.get("port")
    if port is None:
        port = default_port
        argv.append(str(port))
    unit = "accio-selfbind.service"
    # --wait keeps the transient unit referenced until it ends and reports
    # how the main process exited.
    proc = subprocess.Popen(["systemd-run", "--wait", "--unit=" + unit, "--service-type=notify",
                             "-p", "NotifyAccess=main", "-p", "DynamicUser=yes", "--"] + argv,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    active = wait_for(lambda: show(unit, "ActiveState")["ActiveState"] == "active" or proc.poll() is not None)
    ok = active and proc.poll() is None and listening(port)
    T.check(ok, "[22] no socket unit: %s binds port %d itself; listening once active (READY=1)"
            % (" ".join(argv[1:]), port), show(unit, "ActiveState", "Result", "StatusText"))
    g, rest, err = client("127.0.0.1", port, 321)
    T.check(g == b"accio\r\n" and err is None, "[22] self-bound server greets and counts", err)
    lines = wait_for(lambda: (lambda l: l if l == ["321"] else [])(stdout_lines(unit)))
    T.check(lines, "[22] its stdout line is 321", "got %r" % stdout_lines(unit))
    run(["systemctl", "kill", "--kill-who=main", "-s", "SIGTERM", unit])
    try:
        out, _ = proc.communicate(timeout=WAIT)
    except subprocess.TimeoutExpired:
        run(["systemctl", "stop", unit])
        out, _ = proc.communicate()
    T.check(proc.returncode == 0 and "result: success" in out and "code=exited/status=0" in out,
            "[22] SIGTERM: exit 0, result success", out)


def reinstall_and_purge(args, port):
    deb = args.deb or args.preinstalled_deb
    run(["systemctl", "start", SOCKET])
    g, rest, err = client("127.0.0.1", port, 5)
    pid = main_pid()
    if deb:
        rc, out = run(["dpkg", "--force-confdef", "--force-confold", "-i", deb], timeout=60)
        T.check(rc == 0, "[21] dpkg -i again (upgrade path) while socket and service run", out)
        st = wait_for(lambda: show(SOCKET, "ActiveState")["ActiveState"] == "active")
        g, rest, err = client("127.0.0.1", port, 6)
        T.check(st and g == b"accio\r\n" and err is None,
                "[21] after the upgrade the socket is active and serves (MainPID %d -> %d)" % (pid, main_pid()),
                run(["systemctl", "status", "--no-pager", "-n", "20", SOCKET, SERVICE])[1])
    pid = main_pid()
    T.check(pid > 0, "[21] service running before removal (MainPID %d)" % pid)
    rc, out = run(["dpkg", "--purge", "accio-server"], timeout=60)
    T.check(rc == 0, "[21] dpkg --purge accio-server", out)
    gone = wait_for(lambda: not os.path.exists("/proc/%d" % pid) or
                    open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()[0] == "Z")
    T.check(gone and not listening(port), "[21] removal stopped the service and closed port %d" % port)
    left = [p for p in (BIN, CONFIG, "/usr/lib/systemd/system/" + SOCKET, "/usr/lib/systemd/system/" + SERVICE,
                        "/etc/systemd/system/sockets.target.wants/" + SOCKET) if os.path.lexists(p)]
    T.check(not left, "[21] purge removed binary, config, units and the enablement link", left)
    st = show(SOCKET, "LoadState", "ActiveState")
    T.check(st.get("LoadState") in ("not-found", "masked") and st.get("ActiveState") == "inactive",
            "[21] systemd no longer has the socket (%s)" % st)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--deb", help="dpkg -i this package first (live system)")
    p.add_argument("--preinstalled", action="store_true",
                   help="the package was installed before boot (harness --setup 'dpkg -i ...')")
    p.add_argument("--preinstalled-deb", help="with --preinstalled: the same .deb, for the upgrade check")
    p.add_argument("--keep-installed", action="store_true", help="skip the reinstall/purge checks")
    p.add_argument("--offline", action="store_true",
                   help="systemd-analyze verify + security --offline (harness offline mode)")
    p.add_argument("--max-score", type=float, default=1.5, help="exposure limit (default %(default)s)")
    args = p.parse_args()
    if os.environ.get("ACCIO_BOX") != "1":
        sys.stderr.write("e2e.py: refusing to run outside the box (ACCIO_BOX=1 is not set); "
                         "use tests/box/harness\n")
        return 2
    if os.geteuid() != 0:
        sys.stderr.write("e2e.py: must run as root inside the box\n")
        return 2
    for d in (args.deb, args.preinstalled_deb):
        if d and not os.path.isfile(d):
            sys.stderr.write("e2e.py: no such package: %s\n" % d)
            return 2
    t0 = time.monotonic()
    try:
        if args.offline:
            offline(args)
        else:
            live(args)
    except Fatal as e:
        T.check(False, "cannot continue: %s" % e)
    except Exception as e:  # report, do not hide the plan
        import traceback
        T.check(False, "test error: %r" % e, traceback.format_exc())
    if T.failed and not args.offline:
        diagnostics()
    print("# %d checks, %d failed, %.2fs" % (T.n, len(T.failed), time.monotonic() - t0))
    return 1 if T.failed else 0


if __name__ == "__main__":
    sys.exit(main())
