"""The ``opsdeck`` command: ``up`` (dev launcher), ``token`` (mint a bearer token), ``deploy`` (and
``deploy rollback``), ``worker stop`` (emergency stop), ``analyze``, ``bandit evaluate`` (offline
evaluation of the coaching bandit) and ``load`` (load suites)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from shared.auth import DEFAULT_TTL, SCOPES, mint
from shared.errors import ConfigError
from shared.settings import load_settings


def _token(args: argparse.Namespace) -> int:
    settings = load_settings()
    try:
        token = mint(settings.jwt_key, args.scope, subject=args.sub, ttl=args.ttl)
    except ValueError as exc:
        print(f"opsdeck token: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


def _deploy(args: argparse.Namespace) -> int:
    from shared.devtools.deploy_client import confirm, run

    if args.confirm:
        if args.service or args.version:
            print("opsdeck deploy: --confirm ID takes no SERVICE or --version", file=sys.stderr)
            return 2
        return confirm(load_settings(), args.confirm, args.watch)
    if not args.service:
        print("opsdeck deploy: name a SERVICE to deploy, or --confirm ID", file=sys.stderr)
        return 2
    return run(load_settings(), args.service, args.version, args.watch)


def _deploy_rollback(args: argparse.Namespace) -> int:
    from shared.devtools.deploy_client import rollback

    target = {"to": args.to, "tag": args.tag, "provider_deploy": args.provider_deploy}
    return rollback(load_settings(), args.service, target, args.watch)


def _worker_stop(args: argparse.Namespace) -> int:
    from shared.devtools.worker_client import stop

    if args.all == bool(args.workers):
        print("opsdeck worker stop: name WORKER ids or --all (not both)", file=sys.stderr)
        return 2
    return stop(load_settings(), args.workers, args.all)


def rollback_parser() -> argparse.ArgumentParser:
    """``opsdeck deploy rollback``: its own parser (``deploy`` takes an optional SERVICE first)."""
    p = argparse.ArgumentParser(
        prog="opsdeck deploy rollback",
        description="Roll a service back through the coordinator. Without an option: a running deploy "
        "goes back to the stable version, else the stable version to the one stable before it.",
    )
    p.add_argument("service", help="a service of the services file")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--to", metavar="VERSION", help="a version that was stable (Opsdeck's deploy history)")
    which.add_argument(
        "--tag", metavar="TAG", help="the git tag Opsdeck made when that version became stable"
    )
    which.add_argument(
        "--provider-deploy", metavar="ID", help="a deployment of the provider's history (Render, Vercel)"
    )
    p.add_argument("--watch", action="store_true", help="follow the rollback until it ends")
    p.set_defaults(func=_deploy_rollback)
    return p


def _up(args: argparse.Namespace) -> int:
    from shared.devtools.launcher import up

    return up(load_settings(), args.procfile)


def _analyze(args: argparse.Namespace) -> int:
    from shared.devtools.analyze import analyze, render_text
    from shared.redis import sync_client

    settings = load_settings()
    report = analyze(settings, sync_client(settings))
    print(
        orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode()
        if args.json
        else render_text(report)
    )
    if args.min_score is not None and report.overall() < args.min_score:
        print(
            f"opsdeck analyze: score {report.overall()} is below --min-score {args.min_score}",
            file=sys.stderr,
        )
        return 1
    return 0


def _bandit_evaluate(args: argparse.Namespace) -> int:
    from shared.devtools.bandit_client import run

    return run(load_settings(), since=args.since, alphas=args.alpha, limit=args.limit, as_json=args.json)


def parser() -> argparse.ArgumentParser:
    """The argument parser of the ``opsdeck`` command."""
    p = argparse.ArgumentParser(prog="opsdeck", description="Opsdeck: background work on Dramatiq and Redis.")
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser(
        "up",
        help="run coordinator, worker agent and dashboard (embedded Redis if REDIS_URL unset); "
        "a part that dies is restarted with backoff",
    )
    up.add_argument(
        "--procfile", type=Path, default=Path("Procfile"), help="Procfile to run (default: ./Procfile)"
    )
    up.set_defaults(func=_up)
    tok = sub.add_parser("token", help="print one signed bearer token (HS256, JWT_SECRET) on stdout")
    tok.add_argument(
        "--scope", action="append", required=True, choices=SCOPES, help="repeat for several scopes"
    )
    tok.add_argument(
        "--ttl", type=int, default=DEFAULT_TTL, help=f"lifetime in seconds (default {DEFAULT_TTL})"
    )
    tok.add_argument("--sub", default="operator", help="subject: who the token is for (default operator)")
    tok.set_defaults(func=_token)
    dep = sub.add_parser(
        "deploy",
        help="start a deploy through the coordinator (OPSDECK_URL; OPSDECK_TOKEN or JWT_SECRET); "
        "`opsdeck deploy rollback SERVICE [--to V | --tag T | --provider-deploy ID]` rolls one back",
    )
    dep.add_argument("service", nargs="?", help="a service of the services file")
    dep.add_argument("--version", default=None, help="commit, image or tag (default: the provider's latest)")
    dep.add_argument(
        "--confirm",
        metavar="ID",
        help="confirm deploy ID, awaiting confirmation (a manual gate) or paused by an inconclusive "
        "analysis (the step is accepted): it goes on",
    )
    dep.add_argument("--watch", action="store_true", help="follow the rollout until it ends")
    dep.set_defaults(func=_deploy)
    wrk = sub.add_parser("worker", help="worker agents, through the coordinator (scope admin)")
    wrk_sub = wrk.add_subparsers(dest="worker_command", required=True)
    stp = wrk_sub.add_parser(
        "stop", help="emergency stop: a stop command to worker agents through the control channel (audited)"
    )
    stp.add_argument("workers", nargs="*", metavar="WORKER", help="worker agent ids")
    stp.add_argument("--all", action="store_true", help="every registered worker agent")
    stp.set_defaults(func=_worker_stop)
    ana = sub.add_parser(
        "analyze", help="production-readiness report: queues, bottlenecks, resources, security"
    )
    ana.add_argument("--json", action="store_true", help="print the report as JSON")
    ana.add_argument("--min-score", type=int, help="exit 1 when the overall score is below this")
    ana.set_defaults(func=_analyze)
    ban = sub.add_parser(
        "bandit", help="the coaching bandit (through the coordinator: OPSDECK_URL, OPSDECK_TOKEN)"
    )
    ban_sub = ban.add_subparsers(dest="bandit_command", required=True)
    ev = ban_sub.add_parser(
        "evaluate",
        help="offline evaluation (IPS, SNIPS, doubly robust) of the running policy, a uniform one and "
        "candidate alpha values from the logged turns",
    )
    ev.add_argument("--since", help="only ratings newer than this: 30m, 24h, 7d or an ISO 8601 time")
    ev.add_argument("--alpha", type=float, nargs="+", metavar="A", help="candidate alpha values")
    ev.add_argument("--limit", type=int, help="newest logged turns to read (default 5000, at most 20000)")
    ev.add_argument("--json", action="store_true", help="print the coordinator's JSON")
    ev.set_defaults(func=_bandit_evaluate)
    from shared.devtools.load.runner import add_parser as add_load_parser

    add_load_parser(sub)
    return p


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["deploy", "rollback"]:
        args = rollback_parser().parse_args(argv[2:])
    else:
        args = parser().parse_args(argv)
    try:
        sys.exit(args.func(args))
    except ConfigError as exc:
        sys.exit(f"opsdeck: {exc}")


if __name__ == "__main__":
    main()
