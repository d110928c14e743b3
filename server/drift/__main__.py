"""`python -m server.drift`: the offline drift report (server.drift.report)."""

from server.drift.report import main

main()
