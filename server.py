#!/usr/bin/env python3
"""The assignment's interface: ./server.py <PORT> [<FILE-DIR>].

With FILE-DIR it runs `server --save-dir FILE-DIR PORT` (the full Accio
mode: each connection's bytes are saved as FILE-DIR/<N>.file). Replaces itself (exec) with the release build of the Rust server, so the
process, its signals, stdout and exit codes are the binary's own. Builds the
binary first if it is missing.
"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
BINARY = os.path.join(ROOT, "target", "release", "server")

if not os.access(BINARY, os.X_OK):
    build = subprocess.run(
        ["cargo", "build", "--release", "--quiet", "--bin", "server"],
        cwd=ROOT,
        stdout=sys.stderr,
    )
    if build.returncode != 0:
        sys.stderr.write("ERROR: cargo build --release failed; see the messages above\n")
        sys.exit(70)

args = sys.argv[1:]
if len(args) == 2 and not any(a.startswith("-") for a in args):
    args = ["--save-dir", args[1], args[0]]
os.execv(BINARY, [BINARY] + args)
