"""Quality: Great Expectations suites derived from the registry, run on every load.

>>> report = validate_batch(dataset, registry, staged_parquet, context)
>>> report.passed, report.summary()
"""

from quality.suite import CheckSpec, SuiteContext, build_suite, suite_specs
from quality.validate import CheckResult, QualityReport, build_data_docs, validate_batch

__all__ = ["CheckResult", "CheckSpec", "QualityReport", "SuiteContext", "build_data_docs", "build_suite",
           "suite_specs", "validate_batch"]
