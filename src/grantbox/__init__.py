"""grantbox: sandboxes whose only exit is an egress proxy that attaches short-lived OAuth
tokens minted from the sandbox's SPIFFE workload identity."""

__version__ = "0.1.0"
