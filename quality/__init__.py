"""Quality: Great Expectations suites derived from the registry, run on every load.

>>> report = validate_batch(dataset, registry, staged_parquet)
>>> report.passed, report.summary()
"""

from quality.suite import CheckSpec, build_suite, suite_specs
from quality.validate import CheckResult, QualityReport, validate_batch

__all__ = ["CheckResult", "CheckSpec", "QualityReport", "build_suite", "suite_specs", "validate_batch"]
