"""Prefect flows and the front doors that start them (CLI, webhook). Flows only orchestrate.

Importing this package sets the environment Prefect reads when it is imported: no analytics,
no phone-home.
"""

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
