"""Budget alerts (CONTRACT.md §3, kind ``budget``): spend per org or user per
calendar day or month, against limits in a budgets file.

``config`` reads and checks the file, ``crossings`` is the pure event-time
logic (when did the cumulative spend of a period cross each threshold), and
``watcher`` queries the history store and publishes the alerts.
"""
