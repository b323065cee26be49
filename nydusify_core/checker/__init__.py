"""`nydusify check`: validate a Nydus image, and compare it with its source, without nydusd.

Rules (each reported by name with pass/fail and the first differences): `manifest`,
`bootstrap`, `filesystem` (needs a source), `data` (needs reachable blobs).
"""

from nydusify_core.checker.report import CheckReport, RuleResult
from nydusify_core.checker.runner import OUTPUT_FILES, CheckOptions, check

__all__ = ["CheckOptions", "CheckReport", "OUTPUT_FILES", "RuleResult", "check"]
