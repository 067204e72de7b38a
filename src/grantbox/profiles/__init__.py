"""Provider profiles: schema, loading, validation, patterns and grant bindings.

Pure: no I/O beyond reading the files it is asked to load, and no imports from the rest
of grantbox. Everything that decides which token goes to which request starts here.
"""

from .ambiguity import Collision, find_collisions, tie
from .bindings import BindingSet, GrantBinding, expand_bindings, select_binding
from .canonical import canonical_data, canonical_json, content_hash, export_data
from .diagnostics import Diagnostic, ProfileError, Severity, field_path, has_errors
from .headers import FORBIDDEN_HEADERS, header_name_problem
from .hosts import cleartext_allowed, is_in_cluster_host, is_loopback_host
from .loading import LoadedProfile, LoadResult, load_file, load_paths, load_text, parse_profile
from .model import (
    JWT_BEARER,
    JWT_SPIFFE,
    Access,
    AssertionType,
    AudienceOverride,
    AuthStyle,
    Credential,
    Endpoint,
    Enforcement,
    Profile,
    Protocol,
    Rule,
    TlsMode,
    TokenGrant,
    profile_json_schema,
)
from .patterns import (
    ANY_PATH,
    HostPattern,
    PathPattern,
    PatternError,
    host_intersection,
    host_matches,
    host_specificity,
    hosts_overlap,
    parse_host_pattern,
    parse_path_pattern,
    path_intersection,
    path_matches,
    path_specificity,
    paths_overlap,
    request_path,
)
from .token_endpoint import derive_svid_audience, token_endpoint_problem
from .validation import validate_profile, validate_profiles

__all__ = [
    "ANY_PATH",
    "FORBIDDEN_HEADERS",
    "JWT_BEARER",
    "JWT_SPIFFE",
    "Access",
    "AssertionType",
    "AudienceOverride",
    "AuthStyle",
    "BindingSet",
    "Collision",
    "Credential",
    "Diagnostic",
    "Endpoint",
    "Enforcement",
    "GrantBinding",
    "HostPattern",
    "LoadResult",
    "LoadedProfile",
    "PathPattern",
    "PatternError",
    "Profile",
    "ProfileError",
    "Protocol",
    "Rule",
    "Severity",
    "TlsMode",
    "TokenGrant",
    "canonical_data",
    "canonical_json",
    "cleartext_allowed",
    "content_hash",
    "derive_svid_audience",
    "expand_bindings",
    "export_data",
    "field_path",
    "find_collisions",
    "has_errors",
    "header_name_problem",
    "host_intersection",
    "host_matches",
    "host_specificity",
    "hosts_overlap",
    "is_in_cluster_host",
    "is_loopback_host",
    "load_file",
    "load_paths",
    "load_text",
    "parse_host_pattern",
    "parse_path_pattern",
    "parse_profile",
    "path_intersection",
    "path_matches",
    "path_specificity",
    "paths_overlap",
    "profile_json_schema",
    "request_path",
    "select_binding",
    "tie",
    "token_endpoint_problem",
    "validate_profile",
    "validate_profiles",
]
