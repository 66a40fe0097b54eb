"""Load suites (``opsdeck load``): an aiohttp traffic generator with the seeds' traffic mix.

Modules: ``profiles`` (users over time per profile), ``traffic`` (virtual users, recorder),
``stack`` (a private Redis + coordinator + worker agent), ``chaos`` (SIGKILLed Dramatiq
processes, Redis latency through ``faultproxy``), ``report`` (percentiles, memory, thresholds)
and ``runner`` (the command).
"""
