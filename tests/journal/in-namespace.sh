#!/bin/bash
# Runs inside `unshare --pid --fork --kill-child --mount --propagation private`
# (started by tests/journal.rs) as PID 1 of a private PID namespace: when it
# exits, the kernel kills everything it started (journald, the server).
#
#   in-namespace.sh MODE SERVER CONFIG PORT SERVER_NOTIFY [JOURNALD_NOTIFY]
#
# MODE "journal": a private /run (tmpfs) with a real systemd-journald in it
# (volatile storage, /run/log/journal), a private /dev (tmpfs with a few
# device nodes) whose /dev/log leads to journald's dev-log socket.
# MODE "nolog": the same private /dev and /run, no journald, no /dev/log.
#
# Protocol with the test, on stdin/stderr:
#   journal mode: once journald is started, wait for one line on stdin (the
#   test sends it when journald's READY=1 reached JOURNALD_NOTIFY);
#   then start the server (stdout/stderr inherited) and report
#   "in-namespace: server exited RC" on stderr when it ends;
#   then wait until stdin closes (the test reads the journal meanwhile
#   through /proc/PID/root), stop journald and exit.
# Nothing here touches the host's /dev, /run or /tmp: every mount below is on
# a private copy of the mount table (propagation private).
set -euo pipefail

mode=$1 server=$2 config=$3 port=$4 server_notify=$5 journald_notify=${6:-}
say() { echo "in-namespace: $*" >&2; }

# Every mount is -n (--no-mtab): without it, libmount creates /run/mount
# (its utab) on the host's /run before our tmpfs hides it.
# Belt and braces: nothing we mount may propagate back to the host.
mount -n --make-rprivate /

# A fresh /proc for this PID namespace (journald reads /proc/PID/* of its
# clients; the host's /proc would show other processes under those PIDs).
mount -n -t proc -o nosuid,nodev,noexec proc /proc

# A private /run first, so nothing below (mount's utab, journald) writes the
# host's /run.
mount -n -t tmpfs -o mode=0755,nosuid,nodev,size=64m accio-journal-run /run
mkdir -p /run/systemd/journal /run/systemd/journald.conf.d /run/log/journal
# A private /var/log/journal: the host's stays untouched. /tmp is left
# alone: the checkout (binary, test sockets) may well live under it, and
# neither journald nor the server writes there.
if [ -d /var/log/journal ]; then
    mount -n -t tmpfs -o mode=0755,nosuid,nodev,size=16m accio-journal-var /var/log/journal
fi

# A private /dev: a tmpfs with the usual character devices (never the host's
# devtmpfs, which would get the /dev/log symlink).
mount -n -t tmpfs -o mode=0755,nosuid,size=1m accio-journal-dev /dev
for spec in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
    IFS=: read -r name major minor <<<"$spec"
    mknod -m 666 "/dev/$name" c "$major" "$minor"
done
mkdir -m 755 /dev/pts
mkdir -m 1777 /dev/shm
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr

journald=
if [ "$mode" = nolog ]; then
    if [ -e /dev/log ] || [ -L /dev/log ]; then
        say "unexpected /dev/log"
        exit 1
    fi
    say "no /dev/log"
fi
if [ "$mode" = journal ]; then
    # systemd-journald reads /run/systemd/journald.conf.d/*.conf: keep the
    # journal in /run/log/journal only, forward nowhere, no /dev/kmsg.
    cat > /run/systemd/journald.conf.d/50-accio-test.conf <<'CONF'
[Journal]
Storage=volatile
ReadKMsg=no
ForwardToSyslog=no
ForwardToKMsg=no
ForwardToConsole=no
ForwardToWall=no
RateLimitBurst=0
CONF
    ln -s /run/systemd/journal/dev-log /dev/log
    NOTIFY_SOCKET=$journald_notify /lib/systemd/systemd-journald </dev/null &
    journald=$!
    say "journald started"
    # The test answers once journald has sent READY=1.
    read -r _go
fi

NOTIFY_SOCKET=$server_notify "$server" --config "$config" "$port" </dev/null &
srv=$!
rc=0
wait "$srv" || rc=$?
say "server exited $rc"

if [ -n "$journald" ]; then
    # Keep journald (and this mount namespace) alive while the test reads
    # the journal; stdin closes when it is done.
    cat >/dev/null || true
    kill -TERM "$journald" 2>/dev/null || true
    wait "$journald" || true
fi
say "done"
