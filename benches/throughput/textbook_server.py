#!/usr/bin/env python3
"""The Accio server as a textbook would write it: a peer for the throughput benchmark beside it.

One connection at a time: accept, send the greeting, recv(4096) until the client
closes, print the number of bytes. Deliberately plain (no MSG_TRUNC, no big or aligned
buffer): this is what a user of the assignment would otherwise run. The benchmark
starts it as `python3 -u textbook_server.py PORT` so each line reaches the pipe at once.
"""

import socket
import sys


def main():
    port = int(sys.argv[1])
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("", port))
        server.listen()
        while True:
            conn, _addr = server.accept()
            with conn:
                try:
                    conn.sendall(b"accio\r\n")
                    count = 0
                    while True:
                        data = conn.recv(4096)
                        if not data:
                            break
                        count += len(data)
                    print(count)
                except OSError:
                    print("ERROR")


if __name__ == "__main__":
    main()
