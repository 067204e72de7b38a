"""The gateway's services: every write validated, every read a plain value."""

from .config import effective_config
from .orchestration import SandboxOrchestrator
from .profiles import ProfileService, parse_documents
from .providers import ProviderService, ProviderView
from .sandboxes import MAX_PAGE, RecordPage, SandboxService, SandboxView

__all__ = [
    "MAX_PAGE",
    "ProfileService",
    "ProviderService",
    "ProviderView",
    "RecordPage",
    "SandboxOrchestrator",
    "SandboxService",
    "SandboxView",
    "effective_config",
    "parse_documents",
]
