"""The alpha/beta demo: its workloads as child processes and the checks it makes.

``grantbox demo`` drives the whole flow; this package holds the pieces that do not need a
gateway: starting the token issuer and the alpha/beta services on loopback
(:func:`running_workloads`) and judging what the sandbox's requests produced
(:func:`check_answer`, :func:`check_proof_of_life`).
"""

from .checks import (
    Check,
    ProofOfLife,
    check_answer,
    check_proof_of_life,
    proofs_of_life,
    service_claims,
)
from .operator import CommandFailed, CommandResult, Operator
from .probe import HttpProbe, curl_argv, parse_curl_output
from .workloads import (
    DEFAULT_PATH_PREFIX,
    EXAMPLE_DIR_ENV,
    SERVICES,
    DemoPorts,
    DemoWorkloads,
    IdentitySettings,
    WorkloadError,
    WorkloadProcess,
    find_example_dir,
    listening_url,
    running_workloads,
)

__all__ = [
    "DEFAULT_PATH_PREFIX",
    "EXAMPLE_DIR_ENV",
    "SERVICES",
    "Check",
    "CommandFailed",
    "CommandResult",
    "DemoPorts",
    "DemoWorkloads",
    "HttpProbe",
    "IdentitySettings",
    "Operator",
    "ProofOfLife",
    "WorkloadError",
    "WorkloadProcess",
    "check_answer",
    "check_proof_of_life",
    "curl_argv",
    "find_example_dir",
    "listening_url",
    "parse_curl_output",
    "proofs_of_life",
    "running_workloads",
    "service_claims",
]
