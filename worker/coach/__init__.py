"""The coaching pipeline: features → select (LinUCB) → generate (playbook or guarded LLM) → guard → store.

* :mod:`worker.coach.playbook` — the shipped playbook (``playbook.json``) or ``KNOWLEDGE_BASE_PATH``;
* :mod:`worker.coach.engine` — the built-in, deterministic suggestion engine;
* :mod:`worker.coach.llm` — the optional OpenAI-compatible LLM behind retries, a circuit breaker
  (:mod:`worker.coach.breaker`), model downshift and an LRU + TTL cache (:mod:`worker.coach.cache`);
* :mod:`worker.coach.guard` — the prompt-injection guard: delimited input, checked answers;
* :mod:`worker.coach.probe` — idle-tier health probes (one per tier per interval across workers);
* :mod:`worker.coach.pipeline` — one chat turn and one rating, as the actors run them;
* :mod:`worker.coach.metrics` — the Prometheus series (multiprocess mode in worker processes).
"""
