"""The `mlops` command: thin argument parsing around the library.

Only the standard library, PyYAML and jsonschema are imported before a command
runs, so `--help` and `validate` answer at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from runner import DEFAULT_SPEC, MAIN_BRANCH
from runner.errors import RunError, SpecError

if TYPE_CHECKING:
    from runner.dvcstart import EarlyDvc
    from runner.plan import Plan
    from runner.spec import Spec

EXIT_SPEC = 2
EXIT_FAILED = 1
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports


def say(text: str) -> None:
    print(text, flush=True)  # noqa: T201


def _load(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from runner import spec

    return spec.load(args.file)


def _root(args: argparse.Namespace) -> Path:
    return Path(args.file).resolve().parent


def cmd_validate(args: argparse.Namespace) -> int:
    spec = _load(args)
    say(f"{args.file}: valid ({len(spec.stages)} stages)")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from runner.dvcstart import EarlyDvc

    # DVC imports itself while the data is read, and `dvc init` and `dvc
    # remote add` then run in that one process instead of two of their own.
    with EarlyDvc.start(Path.cwd(), merged=False) as early:
        from runner import engine, init

        opts = init.Options(args.data, args.target, args.name, args.task, args.force)
        try:
            data = init.run(opts, Path.cwd(), say)
        except init.InitError as exc:
            print(f"mlops init: {exc}", file=sys.stderr)  # noqa: T201
            return EXIT_SPEC
        args.file = DEFAULT_SPEC
        # The compile and set-up that `mlops run` does.
        _compiled_repo(args, early=early)
        if early is not None:
            engine.set_up(early)
    say(init.next_steps(data))
    return 0


def _init_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from runner import init

    help_text = "write mlops.yaml for a data file and target, set up git and DVC"
    c = sub.add_parser("init", help=help_text, description=help_text)
    init.add_flags(c)
    c.set_defaults(func=cmd_init)


def cmd_compile(args: argparse.Namespace) -> int:
    from runner import compile as compiler

    spec = _load(args)
    root = _root(args)
    if args.check:
        stale = compiler.compile_to(spec, root, check=True)
        for path in stale:
            print(f"{path}: stale; run `mlops compile` and commit it", file=sys.stderr)  # noqa: T201
        if not stale:
            say("generated files are up to date")
        return EXIT_FAILED if stale else 0
    written = compiler.compile_to(spec, root)
    say(f"wrote {', '.join(written)}" if written else "generated files are up to date")
    return 0


def _compiled_repo(
    args: argparse.Namespace, spec: Spec | None = None, early: EarlyDvc | None = None
) -> tuple[Plan, Path]:
    """Compile the spec and make its folder a git + DVC repository, saying so
    (DVC's part in ``early``, the process the command then runs in, if any)."""
    from runner import compile as compiler
    from runner import engine
    from runner import plan as planner

    spec = spec or _load(args)
    root = _root(args)
    framework = compiler.framework_for(spec, root)
    plan = planner.build(spec, framework)
    written = compiler.compile_to(spec, root, framework=framework)
    if written:
        say(f"compiled {', '.join(written)}")
    for line in engine.prepare(root, plan, early):
        say(line)
    return plan, root


def cmd_plan(args: argparse.Namespace) -> int:
    from runner.dvcstart import EarlyDvc

    # DVC imports itself while the spec is read, as in `mlops run`.
    with EarlyDvc.start(_root(args), merged=False) as early:
        from runner import engine, runlock

        spec = _load(args)  # bad input: exit 2 before the lock writes anything
        with runlock.held(_root(args)):  # it compiles: not under a running `run`
            plan, root = _compiled_repo(args, spec, early)
        status = engine.status(root, early)
    will_run = status.will_run(plan)
    say(f"{len(will_run)} of {len(plan.stages)} stages would run:")
    width = max(len(s.name) for s in plan.stages)
    for stage in plan.stages:
        if stage.name in status.reasons:
            why = "; ".join(status.reasons[stage.name])
        elif stage.name in will_run:
            ups = [u for u in plan.upstream_of(stage.name) if u in will_run]
            why = f"after {', '.join(ups)}"
        else:
            continue
        say(f"  {stage.name:<{width}}  {why}")
    unchanged = [s.name for s in plan.stages if s.name not in will_run]
    if unchanged:
        say(f"unchanged: {', '.join(unchanged)}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from runner.dvcstart import EarlyDvc

    # DVC imports itself while the spec is read (runner/dvcstart.py).
    with EarlyDvc.start(_root(args)) as early:
        from runner import engine, remotecheck, runlock

        spec = _load(args)  # bad input: exit 2 before the lock writes anything
        with runlock.held(_root(args)):  # compile and repro: one run at a time
            try:
                plan, root = _compiled_repo(args, spec, early)
                if args.pull:
                    remotecheck.check(root)  # a remote that is down is not empty
                outcome = engine.repro(
                    root, plan, say, force=args.force, pull=args.pull, early=early
                )
            except BaseException as exc:
                engine.record_failure(_root(args), exc)
                raise
            engine.record(root, outcome)
    say(
        f"mlops run: {len(plan.stages)} stages, {len(outcome.ran)} ran, "
        f"{len(outcome.unchanged)} unchanged, {len(outcome.restored)} restored "
        f"from the run-cache, in {outcome.seconds:.1f}s"
        + (f" ({outcome.warm} started warm)" if outcome.warm else "")
    )
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from runner import engine, remotecheck, runlock

    root = _root(args)
    with runlock.held(root):  # not while a run writes the cache
        remotecheck.check(root)
        engine.push(root, list(args.stages), say)
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    import os

    from runner import argo_submit
    from runner import compile as compiler
    from runner import plan as planner

    spec = _load(args)
    plan = planner.build(spec, compiler.framework_for(spec, _root(args)))
    name = argo_submit.run(
        plan,
        os.environ,
        say,
        dry=args.dry_run,
        repo=args.repo,
        revision=args.revision,
    )
    if not args.dry_run:
        say(f"submitted workflow {name}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from runner import plan as planner
    from runner import report

    # DVC's diffs compute in their own process while the spec is read.
    with report.diffs_started(_root(args), args.base) as diffs:
        plan = planner.build(_load(args))
        written = report.write(_root(args), plan, args.base, Path(args.output), diffs)
    say(f"wrote {written} (base: {args.base})")
    return 0


def cmd_gates(args: argparse.Namespace) -> int:
    from runner import plan as planner
    from runner import report

    plan = planner.build(_load(args))
    if failed := report.failed_run(_root(args)):
        # The verdicts there are an earlier run's: never this run's pass.
        raise RunError(f"{failed}; no gate verdict is this run's")
    lines, ok = report.gate_lines(report.load_gates(_root(args), plan))
    for line in lines:
        say(line)
    return 0 if ok else EXIT_FAILED


def cmd_promote(args: argparse.Namespace) -> int:
    from runner import gitops, report

    spec = _load(args)
    if failed := report.failed_run(_root(args)):
        # registered.json there is an earlier run's: run again, then promote.
        raise RunError(f"{failed}; promote a run that finished")
    return gitops.after(_root(args), spec, say, "promote", [])


def cmd_rollback(args: argparse.Namespace) -> int:
    from runner import gitops

    argv = ["--to", args.to] if args.to else []
    return gitops.after(_root(args), _load(args), say, "rollback", argv)


def cmd_release(args: argparse.Namespace) -> int:
    from runner import gitops

    spec = _load(args)
    if args.check:
        return gitops.check(_root(args), spec, say)
    return gitops.sync(_root(args), spec, say, commit=args.commit)


def cmd_history(args: argparse.Namespace) -> int:
    from runner import release

    return release.run_module(_root(args), "audit", release.history_args(args))


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from runner import release

    spec = _load(args)
    argv = release.serve_args(args, spec.deploy, os.environ)
    return release.run_module(_root(args), "serving", argv + release.params_args(spec))


def cmd_deploy(args: argparse.Namespace) -> int:
    import os

    from runner import release

    spec = _load(args)
    argv = release.deploy_args(args, spec.deploy, os.environ)
    return release.run_module(_root(args), "deploy", argv)


def cmd_monitor(args: argparse.Namespace) -> int:
    from runner import release

    argv = release.monitor_args(args, _load(args))
    return release.run_module(_root(args), "monitor", argv)


def cmd_retrain(args: argparse.Namespace) -> int:
    import os
    from datetime import UTC, datetime

    from runner import release
    from runner import retrain as retrainer

    spec = _load(args)
    root = _root(args)
    monitor = argparse.Namespace(
        output=args.monitor, current=None, since=None, no_report=True, log=args.log
    )
    settings = release.monitor_args(monitor, spec)[:2]  # --settings JSON

    def rows(dest: Path) -> int:
        return release.run_module(
            root, "retrain", [*settings, "--output", str(dest.resolve())]
        )

    retrainer.run(
        root,
        Path(args.file),
        rows,
        date=args.date or datetime.now(UTC).date().isoformat(),
        monitor_dir=Path(args.monitor),
        source=args.source,
        branch=args.branch,
        env=os.environ,
        say=say,
    )
    return 0


def cmd_stage(args: argparse.Namespace) -> int:
    """Run a built-in stage of the installed framework, as DVC's `cmd` does."""
    import os

    # -P: no folder of the repository goes first on sys.path, so a team's own
    # stages/ cannot shadow the framework's package. exec: DVC and Ctrl-C
    # deal with the stage's own process, as with `python -m`.
    argv = [sys.executable, "-P", "-m", f"stages.{args.kind}", args.stage]
    os.execv(sys.executable, argv)  # noqa: S606
    return EXIT_FAILED  # not reached


class _Version(argparse.Action):
    """--version, read from the distribution's metadata: no import of mlflow."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kw: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help=str(kw.get("help")))

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        from runner import framework

        say(f"mlops {framework.version()}")
        parser.exit()


def _stage_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from runner.builtins import BUILTINS

    help_text = "run one built-in stage (the command DVC runs in a team's repository)"
    c = sub.add_parser("stage", help=help_text, description=help_text)
    c.add_argument("kind", choices=sorted(BUILTINS), help="the built-in stage's kind")
    c.add_argument("stage", help="the stage's name in mlops.yaml")
    c.set_defaults(func=cmd_stage)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mlops",
        description="Compile mlops.yaml into DVC, Argo Workflows and GitHub Actions, "
        "and run the pipeline locally.",
    )
    p.add_argument(
        "--traceback", action="store_true", help="show the full traceback of an error"
    )
    p.add_argument("--version", action=_Version, help="show the version and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _init_parser(sub)
    commands: list[tuple[str, str, Callable[[argparse.Namespace], int]]] = [
        ("validate", "check mlops.yaml and report the problems found", cmd_validate),
        ("compile", "write every generated file from mlops.yaml", cmd_compile),
        ("plan", "show which stages would run and why, without running them", cmd_plan),
        ("run", "compile, set up git and DVC if needed, and run the pipeline", cmd_run),
        (
            "push",
            "push outputs and the run-cache, git-kept outputs too, to the DVC remote",
            cmd_push,
        ),
        ("submit", "send the pipeline to an Argo Server and start a run", cmd_submit),
        ("promote", "gate the candidate model and move production to it", cmd_promote),
        (
            "rollback",
            "move production back to the version before (or --to VERSION)",
            cmd_rollback,
        ),
        (
            "release",
            "write deploy/<environment>/ for the production model (git names it)",
            cmd_release,
        ),
        ("history", "list promotions, or which model served at a date", cmd_history),
        ("serve", "serve the production model over HTTP until stopped", cmd_serve),
        ("deploy", "serve the production model and smoke-test it", cmd_deploy),
        ("report", "write a Markdown report of the last run", cmd_report),
        ("gates", "show the gate verdicts; exit 1 if any failed", cmd_gates),
        (
            "monitor",
            "check current data for drift from the production model's training "
            "data (exit 0 no drift, 3 drift, 4 could not check)",
            cmd_monitor,
        ),
        (
            "retrain",
            "after drift: add the labelled current rows to the training source "
            "and commit (the retraining pull request's change)",
            cmd_retrain,
        ),
    ]
    for name, help_text, func in commands:
        c = sub.add_parser(name, help=help_text, description=help_text)
        c.add_argument(
            "-f",
            "--file",
            default=DEFAULT_SPEC,
            help=f"the spec (default: {DEFAULT_SPEC})",
        )
        c.set_defaults(func=func)
        if name == "compile":
            c.add_argument(
                "--check",
                action="store_true",
                help="write nothing; fail if a generated file is stale",
            )
        if name in ("history", "serve", "deploy"):
            from runner import release

            release.add_flags(c, name)
        if name == "run":
            c.add_argument(
                "--force", action="store_true", help="run every stage even if unchanged"
            )
            c.add_argument(
                "--pull",
                action="store_true",
                help="restore stages from the DVC remote's run-cache and pull missing "
                "outputs instead of recomputing them (what CI runs)",
            )
        if name == "rollback":
            c.add_argument(
                "--to", metavar="VERSION", help="the version to serve again "
                "(default: the one production held before the current one)",
            )  # fmt: skip
        if name == "release":
            c.add_argument(
                "--check", action="store_true",
                help="write nothing; exit 1 if deploy/ and the registry disagree",
            )  # fmt: skip
            c.add_argument(
                "--commit", action="store_true", help="git commit what changed"
            )
        if name == "push":
            c.add_argument(
                "stages", nargs="*", metavar="STAGE", help="only these (default: all)"
            )
        if name == "report":
            c.add_argument(
                "--output",
                default=".mlops/report",
                help="folder for report.md and its images (default: .mlops/report)",
            )
            c.add_argument(
                "--base",
                default=MAIN_BRANCH,
                help="git revision to diff metrics and params against "
                f"(default: {MAIN_BRANCH})",
            )
        if name == "monitor":
            _monitor_flags(c)
        if name == "retrain":
            _retrain_flags(c)
        if name == "submit":
            c.add_argument(
                "--dry-run",
                action="store_true",
                help="print the HTTP requests that would be sent; send nothing",
            )
            c.add_argument(
                "--revision", help="git commit to run (default: the checked-out HEAD)"
            )
            c.add_argument(
                "--repo", help="git URL to clone (default: argo.repo, else origin)"
            )
    _stage_parser(sub)
    return p


def _monitor_flags(c: argparse.ArgumentParser) -> None:
    c.add_argument(
        "--current", metavar="FILE",
        help="check this CSV, Parquet or JSON file (default: monitoring.current, "
        "else the prediction log)",
    )  # fmt: skip
    c.add_argument(
        "--output", default=".mlops/monitor", metavar="DIR",
        help="folder for monitor.json, summary.md, report.html and metrics.prom "
        "(default: .mlops/monitor)",
    )  # fmt: skip
    c.add_argument(
        "--since", metavar="WHEN",
        help="only prediction-log entries after WHEN: 24h, 7d, 2w or an ISO date "
        "or datetime (default: monitoring.window, else the whole log)",
    )  # fmt: skip
    c.add_argument(
        "--log", metavar="DIR_OR_URL",
        help="check the prediction log in this folder, or at a URL fsspec reads "
        "(s3://..., gs://...) where its files were shipped, even where "
        "monitoring.current is set (default: deploy.prediction_log.path)",
    )  # fmt: skip
    c.add_argument(
        "--no-report", action="store_true", help="skip the deepchecks HTML report"
    )


def _retrain_flags(c: argparse.ArgumentParser) -> None:
    c.add_argument(
        "--monitor", default=".mlops/monitor", metavar="DIR",
        help="the drift check's outputs (default: .mlops/monitor)",
    )  # fmt: skip
    c.add_argument(
        "--source", help="the data source to add the rows to (default: ingest's)"
    )
    c.add_argument(
        "--branch", help="name of the retraining branch, e.g. an open pull "
        "request's (default: mlops/retrain-<UTC date>)",
    )  # fmt: skip
    c.add_argument("--date", help="UTC date in file and branch names (default: today)")
    c.add_argument(
        "--log", metavar="DIR_OR_URL",
        help="where the drift check read the prediction log, if not "
        "deploy.prediction_log.path (as `mlops monitor --log`)",
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SpecError as exc:
        if args.traceback:
            raise
        for line in exc.lines():
            print(line, file=sys.stderr)  # noqa: T201
        return EXIT_SPEC
    except RunError as exc:
        if args.traceback:
            raise
        print(f"mlops: error: {exc}", file=sys.stderr)  # noqa: T201
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`mlops plan | head -1`): stop quietly, as a
        # shell tool does, with the shell's code for a SIGPIPE. Python would
        # print a traceback, then another when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    raise SystemExit(main())
