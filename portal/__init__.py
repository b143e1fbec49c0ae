"""The web portal `onesource serve` adds beside the HTTP API: sign-in and the bureau's KPI dashboard."""
