"""Prometheus series of the coaching pipeline, written by every Dramatiq process.

Like :mod:`worker.metrics`, these are module-level and land in the agent's multiprocess directory
(``PROMETHEUS_MULTIPROC_DIR``), so the agent's ``/metrics`` merges every process. Gauges say how
to merge: the breaker state and model tier take the worst live process (``livemax`` /
``livemin``); reward and phase the most recent write (``mostrecent``). The names keep the
``coordinator_`` prefix the product's dashboards and alerts already use.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

#: Pipeline nodes, in order.
NODES = ("features", "select", "generate", "guard", "store")
NODE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
UCB_BUCKETS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0)

NODE_DURATION = Histogram(
    "coordinator_node_execution_duration_seconds",
    "Time spent in one coaching pipeline node.",
    ["node"],
    buckets=NODE_BUCKETS,
)
NODE_TOTAL = Counter(
    "coordinator_node_execution",
    "Coaching pipeline node executions by outcome (ok|error).",
    ["node", "status"],
)
DECISIONS = Counter(
    "coordinator_bandit_decisions",
    "Bandit decisions by arm; exploration=true for warm-up or when the confidence bonus changed the choice.",
    ["arm", "exploration"],
)
FEEDBACK = Counter("coordinator_user_feedback", "Ratings applied to the bandit (each rating once).", ["arm"])
UCB_SCORE = Histogram(
    "coordinator_bandit_ucb_score", "UCB score of every arm at each decision.", ["arm"], buckets=UCB_BUCKETS
)
REWARD = Gauge(
    "coordinator_bandit_reward",
    "Mean learned reward (0-1) per arm over every rating applied.",
    ["arm"],
    multiprocess_mode="mostrecent",
)
PHASE = Gauge(
    "coordinator_bandit_phase", "Bandit phase: 0 warm-up, 1 learned.", multiprocess_mode="mostrecent"
)
ALPHA = Gauge(
    "coordinator_bandit_alpha",
    "Exploration weight alpha of the latest decision (BANDIT_ALPHA, or BANDIT_ALPHA_SCHEDULE's).",
    multiprocess_mode="mostrecent",
)
SUGGESTIONS = Counter(
    "coordinator_suggestions", "Suggestions by the path that produced them.", ["arm", "source"]
)
LLM_REQUESTS = Counter(
    "coordinator_llm_requests", "LLM HTTP attempts by model tier and outcome.", ["tier", "outcome"]
)
LLM_BREAKER = Gauge(
    "coordinator_llm_breaker_state",
    "LLM circuit breaker: 0 closed, 1 half-open, 2 open (worst live process).",
    multiprocess_mode="livemax",
)
LLM_TIER = Gauge(
    "coordinator_llm_model_tier",
    "Model tier the next LLM call uses: 2 creative, 1 balanced, 0 fast (lowest live process).",
    multiprocess_mode="livemin",
)
LLM_TIER_CHOSEN = Counter(
    "coordinator_llm_tier_chosen",
    "Turns routed to each model tier: the tier of the turn's first LLM attempt (LLM_TIER_WEIGHTS's draw, "
    "handed down while that tier is degraded).",
    ["tier"],
)
LLM_TIER_BREAKER = Gauge(
    "coordinator_llm_tier_breaker_state",
    "Circuit breaker of one model tier: 0 closed, 1 half-open, 2 open (worst live process).",
    ["tier"],
    multiprocess_mode="livemax",
)
LLM_PROBES = Counter(
    "coordinator_llm_probes",
    "Idle-tier health probes (LLM_PROBE_INTERVAL) by tier and outcome (ok|error|invalid).",
    ["tier", "outcome"],
)
LLM_GUARD_REJECTIONS = Counter(
    "coordinator_llm_guard_rejections",
    "LLM answers the prompt-injection guard refused (the built-in answer was used), by reason.",
    ["reason"],
)
LLM_CACHE_HITS = Counter("coordinator_llm_cache_hits", "LLM answers served from the cache.")
LLM_CACHE_MISSES = Counter("coordinator_llm_cache_misses", "LLM lookups the cache could not answer.")
