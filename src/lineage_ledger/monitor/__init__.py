"""A monitor of a published log: follows it through C2SP tlog-tiles and alerts on rollbacks, forks, bad
tiles or entries, missing witness cosignatures and stalls (docs/monitor.md)."""

from lineage_ledger.monitor.entries import EntryFollower, EntryProblem
from lineage_ledger.monitor.follow import ALERTS, Monitor, MonitorFinding, MonitorState, is_alert

__all__ = ["ALERTS", "EntryFollower", "EntryProblem", "Monitor", "MonitorFinding", "MonitorState", "is_alert"]
