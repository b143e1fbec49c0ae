"""Custom Great Expectations for China's national code standards.

Each is a proper GX 1.x ColumnMapExpectation with its own metric, so its results (unexpected count,
failing rows and values) look and render like GX's own. The check-digit arithmetic is
:mod:`schemas.formats`, the same code the demo city generates valid codes with.

* ``ExpectColumnValuesToBeValidUscc``        unified social credit code, GB 32100-2015 (and the
                                              embedded organisation code, GB 11714)
* ``ExpectColumnValuesToBeValidResidentId``  resident identity number, GB 11643-1999: check digit
                                              and a real, past birth date in positions 7-14
* ``ExpectColumnValuesToBeValidOrgCode``     organisation code, GB 11714

Importing this module registers them with GX.
"""

from __future__ import annotations

import datetime as dt

from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations.expectation import ColumnMapExpectation
from great_expectations.expectations.metrics.map_metric_provider import (
    ColumnMapMetricProvider,
    column_condition_partial,
)

from schemas.formats import is_valid_org_code, is_valid_resident_id, is_valid_uscc


def valid_birth_date(code: str, today: dt.date | None = None) -> bool:
    """Positions 7-14 of an 18-digit resident ID are a real date, not in the future, after 1900."""
    try:
        born = dt.datetime.strptime(code[6:14], "%Y%m%d").date()
    except ValueError:
        return False
    return dt.date(1900, 1, 1) <= born <= (today or dt.date.today())


def resident_id_ok(code: str) -> bool:
    return is_valid_resident_id(code) and valid_birth_date(code)


class ColumnValuesValidUscc(ColumnMapMetricProvider):
    condition_metric_name = "column_values.valid_uscc"

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column, **kwargs):
        return column.map(lambda v: is_valid_uscc(str(v)))


class ColumnValuesValidResidentId(ColumnMapMetricProvider):
    condition_metric_name = "column_values.valid_resident_id"

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column, **kwargs):
        return column.map(lambda v: resident_id_ok(str(v)))


class ColumnValuesValidOrgCode(ColumnMapMetricProvider):
    condition_metric_name = "column_values.valid_org_code"

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column, **kwargs):
        return column.map(lambda v: is_valid_org_code(str(v)))


class ExpectColumnValuesToBeValidUscc(ColumnMapExpectation):
    """Expect every non-null value to be a unified social credit code with correct check characters
    (GB 32100-2015 position 18 and the GB 11714 organisation code inside it)."""

    map_metric = "column_values.valid_uscc"
    success_keys = ("mostly",)
    args_keys = ("column",)
    library_metadata = {"tags": ["onesource", "gb32100"], "contributors": ["onesource"]}


class ExpectColumnValuesToBeValidResidentId(ColumnMapExpectation):
    """Expect every non-null value to be an 18-digit resident identity number with a correct ISO 7064
    MOD 11-2 check character (GB 11643-1999) and a real birth date that is not in the future."""

    map_metric = "column_values.valid_resident_id"
    success_keys = ("mostly",)
    args_keys = ("column",)
    library_metadata = {"tags": ["onesource", "gb11643"], "contributors": ["onesource"]}


class ExpectColumnValuesToBeValidOrgCode(ColumnMapExpectation):
    """Expect every non-null value to be an organisation code with a correct check character (GB 11714)."""

    map_metric = "column_values.valid_org_code"
    success_keys = ("mostly",)
    args_keys = ("column",)
    library_metadata = {"tags": ["onesource", "gb11714"], "contributors": ["onesource"]}


# format rule -> the expectation that proves its check digits
CHECK_DIGIT_EXPECTATIONS = {
    "uscc": ExpectColumnValuesToBeValidUscc,
    "resident_id": ExpectColumnValuesToBeValidResidentId,
    "org_code": ExpectColumnValuesToBeValidOrgCode,
}
