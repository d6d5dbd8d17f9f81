"""libnice's receive callback and binary send through ctypes, for the libnice drivers (libnice_agent.py,
tests/worker/libnice_caller.py) that run under the *system* Python: GI cannot bind the callback, and passes
send's buffer as a UTF-8 string. Imports nothing from umedge, nor GI."""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

LIBNICE = ctypes.CDLL(ctypes.util.find_library("nice") or "libnice.so.10")
GLIB = ctypes.CDLL(ctypes.util.find_library("glib-2.0") or "libglib-2.0.so.0")
GLIB.g_main_context_default.restype = ctypes.c_void_p
ctypes.pythonapi.PyCapsule_GetPointer.restype = ctypes.c_void_p
ctypes.pythonapi.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
# void (*NiceAgentRecvFunc) (NiceAgent *, guint stream, guint component, guint len, gchar *buf, gpointer)
RECV_FUNC = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint,
                             ctypes.c_void_p, ctypes.c_void_p)
LIBNICE.nice_agent_attach_recv.restype = ctypes.c_int
LIBNICE.nice_agent_attach_recv.argtypes = [ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p,
                                           RECV_FUNC, ctypes.c_void_p]
LIBNICE.nice_agent_send.restype = ctypes.c_int
LIBNICE.nice_agent_send.argtypes = [ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint, ctypes.c_char_p]


def _pointer(agent: object) -> int:
    """The NiceAgent * behind a GI Nice.Agent."""
    return int(ctypes.pythonapi.PyCapsule_GetPointer(agent.__gpointer__, None))  # type: ignore[attr-defined]


def attach_recv(agent: object, stream: int, component: int, received: Callable[[int, bytes], None]) -> object:
    """nice_agent_attach_recv on the default main context: `received(component, data)` for every packet.

    Without a receive callback libnice watches the sockets in a private context that only its recv calls
    iterate (and GI's recv_nonblocking crashes), so nothing, not even a TURN response, would be read.
    Returns the C callback: the caller keeps it alive as long as the agent.
    """

    def on_packet(_agent: object, _stream: int, comp: int, length: int, buf: int, _data: object) -> None:
        received(int(comp), ctypes.string_at(buf, length))

    callback = RECV_FUNC(on_packet)
    if not LIBNICE.nice_agent_attach_recv(_pointer(agent), stream, component, GLIB.g_main_context_default(),
                                          callback, None):
        raise RuntimeError("nice_agent_attach_recv failed")
    return callback


def send(agent: object, stream: int, component: int, data: bytes) -> int:
    """nice_agent_send of binary data (RTP, RTCP)."""
    return int(LIBNICE.nice_agent_send(_pointer(agent), stream, component, len(data), data))
