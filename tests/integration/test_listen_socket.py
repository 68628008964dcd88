"""Shutdown and the listening socket (defect 10): while in-flight requests drain, new clients
are refused at once, but the listening descriptor stays open until libmicrohttpd has stopped,
so its number cannot be reused by another socket or file while MHD's threads still know it."""
import os
import signal
import socket
import time

from helpers import KEY1


def _listener_inode(port):
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                cols = line.split()
                local, state, inode = cols[1], cols[3], cols[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    return inode
    return None


def _fd_of(pid, target):
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                return fd
        except OSError:
            pass
    return None


def _refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return False
    except (ConnectionRefusedError, ConnectionResetError):
        return True


def test_listening_socket_closed_only_after_the_server_stops(make_server):
    srv = make_server()
    pid = srv.proc.pid
    inode = _listener_inode(srv.port)
    assert inode, "no listening socket found"
    target = f"socket:[{inode}]"
    fd = _fd_of(pid, target)
    assert fd is not None, "the listener is not among the process's descriptors"
    # A request in flight (its body still arriving) keeps the server draining.
    held = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    held.sendall(b"POST /api/v1/webhook/conversation HTTP/1.1\r\nHost: x\r\n"
                 + f"Authorization: Bearer {KEY1}\r\n".encode()
                 + b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
    time.sleep(0.5)
    srv.send_signal(signal.SIGTERM)
    try:
        deadline = time.monotonic() + 10
        while not _refused(srv.port):
            assert time.monotonic() < deadline, "new clients are still accepted while stopping"
            time.sleep(0.05)
        assert srv.proc.poll() is None, "the server should still be draining"
        # Still draining: the descriptor must still be the listener, not closed or reused.
        assert os.readlink(f"/proc/{pid}/fd/{fd}") == target
    finally:
        held.close()
    assert srv.stop() == 0
