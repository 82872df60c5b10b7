"""HTTP RPC: any contract served at ``POST /rpc/<module>/<method>`` and called through a proxy."""

from app.kernel.rpc.breaker import CircuitBreaker
from app.kernel.rpc.client import RemoteModule
from app.kernel.rpc.server import rpc_router

__all__ = ["CircuitBreaker", "RemoteModule", "rpc_router"]
