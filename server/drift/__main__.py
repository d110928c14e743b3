"""`python -m server.drift`: the offline drift report (server.drift.report)."""

from server.drift.report import main

if __name__ == "__main__":
    main()
