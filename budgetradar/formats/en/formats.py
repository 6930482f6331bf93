"""English formats for BudgetRadar: one date-time format everywhere, the zone named
(``T`` is the active zone's abbreviation; admin pages activate the tenant's zone)."""

DATETIME_FORMAT = "Y-m-d H:i:s T"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s T"
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i:s"
