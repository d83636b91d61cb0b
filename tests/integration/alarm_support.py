"""Alarms of template.yaml evaluated on metrics stored in moto's CloudWatch.

moto stores metric data and answers GetMetricStatistics, but never moves an alarm's state. `MetricStore`
publishes what a handler emitted (its EMF totals) at a chosen time, and `evaluate` judges one of the
template's single-metric alarms the way CloudWatch does: the last `EvaluationPeriods` periods of
`Period` seconds before `now`, each period's `Statistic` read back from the store, a period without
data treated by `TreatMissingData`, and ALARM when at least `DatapointsToAlarm` of them breach
`Threshold` by `ComparisonOperator`.
"""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from earnings_sync.observability import NAMESPACE, SERVICE, spec_for
from earnings_sync_local.template import build_context, load_template, resolve

COMPARISONS = {
    "GreaterThanThreshold": operator.gt,
    "GreaterThanOrEqualToThreshold": operator.ge,
    "LessThanThreshold": operator.lt,
    "LessThanOrEqualToThreshold": operator.le,
}


def template_alarm(alarm_id: str, template: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The alarm's Properties as deployed (mappings resolved; references to resources left as they are)."""
    template = template or load_template()
    return resolve(template["Resources"][alarm_id]["Properties"], build_context(template, keep_unresolved=True))


@dataclass(frozen=True)
class Verdict:
    state: str  # ALARM or OK
    values: list[float | None]  # each evaluated period's statistic, oldest first; None: no data
    breaching: int


class MetricStore:
    """The EarningsSync namespace in moto's CloudWatch, with the `service` dimension every EMF blob carries."""

    def __init__(self, cloudwatch: Any) -> None:
        self.cloudwatch = cloudwatch
        self.dimensions = [{"Name": "service", "Value": SERVICE}]

    def publish(self, totals: Mapping[str, float], at: dt.datetime) -> None:
        """One invocation's metrics (`parse_emf` totals), as CloudWatch would store them at `at`."""
        data = [
            {"MetricName": name, "Dimensions": self.dimensions, "Timestamp": at, "Value": float(value), "Unit": spec_for(name).unit.value}
            for name, value in sorted(totals.items())
        ]
        for first in range(0, len(data), 20):
            self.cloudwatch.put_metric_data(Namespace=NAMESPACE, MetricData=data[first : first + 20])

    def evaluate(self, alarm: Mapping[str, Any], now: dt.datetime) -> Verdict:
        assert alarm["Namespace"] == NAMESPACE and alarm["Dimensions"] == self.dimensions, alarm
        period, count = int(alarm["Period"]), int(alarm["EvaluationPeriods"])
        statistic, treat = alarm["Statistic"], alarm.get("TreatMissingData", "missing")
        if treat not in ("breaching", "notBreaching"):
            raise NotImplementedError(f"TreatMissingData {treat}")
        compare, threshold = COMPARISONS[alarm["ComparisonOperator"]], float(alarm["Threshold"])
        values: list[float | None] = []
        for back in range(count, 0, -1):
            start = now - dt.timedelta(seconds=back * period)
            points = self.cloudwatch.get_metric_statistics(
                Namespace=NAMESPACE, MetricName=alarm["MetricName"], Dimensions=self.dimensions,
                StartTime=start, EndTime=start + dt.timedelta(seconds=period), Period=period, Statistics=[statistic],
            )["Datapoints"]
            values.append(points[0][statistic] if points else None)
        breaching = sum(1 for value in values if (treat == "breaching" if value is None else compare(value, threshold)))
        state = "ALARM" if breaching >= int(alarm.get("DatapointsToAlarm", count)) else "OK"
        return Verdict(state, values, breaching)
