"""The egress proxy over several worker processes: one parent holding the listeners, the
grant engine, the CA, the record and the metrics; workers running the request path."""

from .metrics import PoolMetrics, merge, snapshot
from .parent import ProxyPool
from .tokens import REUSE_SECONDS, ParentTokens

__all__ = ["REUSE_SECONDS", "ParentTokens", "PoolMetrics", "ProxyPool", "merge", "snapshot"]
