# Socket activation as systemd does it, for the Switchboard tests: bind and
# listen on 127.0.0.1:0, print the port, then exec the server with the
# socket as descriptor 3, LISTEN_FDS=1 and LISTEN_PID = its own pid (exec
# keeps the pid). Usage: activate.py SERVER [ARGS...]
import os
import socket
import sys

s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen(128)
print("bound %d" % s.getsockname()[1], flush=True)
if s.fileno() != 3:
    os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
env = dict(os.environ, LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
os.execve(sys.argv[1], sys.argv[1:], env)
