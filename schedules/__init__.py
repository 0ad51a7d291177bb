"""When the weekly issue goes out: the cron schedule, the send deadline, the exactly-once job and
the APScheduler wiring that fires it.

Dependency direction: `schedules` uses `digest`; nothing in `digest` imports from here except the
command-line entry points, which compose everything.
"""
