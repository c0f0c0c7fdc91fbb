"""`python -m chaos [--quick] [--only NAME,...]`: fotoowl against real faults, each scenario checked the same way.

Starts PostgreSQL, Valkey and SeaweedFS (fotoowl.embedded) behind fault proxies, the Drive emulator in
its own process, then per scenario fresh state and fotoowl's own processes, and writes RELIABILITY.md
(quick mode: chaos/RESULTS-quick.md). Exits 1 when any scenario fails a check. See chaos/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shlex
import shutil
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.__main__ import product_version
from bench.procs import PYTHON, Children

import fotoowl
from chaos import report
from chaos.emulator import DriveManifest
from chaos.runner import Outcome, Plan, Runner
from chaos.scenarios import BY_NAME, SCENARIOS, Faults
from chaos.servers import Servers

HERE = Path(__file__).resolve().parent
EMULATOR_START_TIMEOUT_S = 300.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m chaos", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="400 images and 5-8 s faults: the CI variant")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated scenarios (the clean run always comes first "
        f"unless --baseline-s is given): {', '.join(BY_NAME)}",
    )
    parser.add_argument("--images", type=int, default=0, help="images per import (3,000; quick 400)")
    parser.add_argument("--big", type=int, default=0, help="of which over the 8 MiB part size (4; quick 2)")
    parser.add_argument("--latency-ms", type=float, default=30.0, help="added by the emulator to every request")
    parser.add_argument("--slack-s", type=float, default=0.0, help="bound = clean time + fault + this (120; quick 60)")
    parser.add_argument("--baseline-s", type=float, default=0.0, help="skip the clean run and use this time")
    parser.add_argument(
        "--sample",
        type=int,
        default=-1,
        help="objects read back per scenario besides the multipart ones (300; quick and 0: all)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--output", type=Path, default=None, help="the report (default RELIABILITY.md; quick: chaos/RESULTS-quick.md)"
    )
    return parser.parse_args(argv)


def make_plan(args: argparse.Namespace) -> Plan:
    quick = bool(args.quick)
    faults = (
        Faults(s3_pause_s=6, s3_down_s=6, s3_500_s=5, redis_down_s=2, kills=6, kill_window_s=8) if quick else Faults()
    )
    sample = None if (args.sample < 0 and quick) else (300 if args.sample < 0 else args.sample or None)
    return Plan(
        quick=quick,
        images=args.images or (400 if quick else 3000),
        big=args.big or (2 if quick else 4),
        probe_images=20,
        latency_s=args.latency_ms / 1000,
        seed=args.seed,
        slack_s=args.slack_s or (60.0 if quick else 120.0),
        clean_timeout_s=300.0 if quick else 900.0,
        max_fault_s=300.0,
        probe_timeout_s=60.0 if quick else 120.0,
        sample=sample,
        trigger_fraction=0.3,
        faults=faults,
    )


async def launch_emulator(children: Children, plan: Plan) -> DriveManifest:
    path = children.log_dir / "emulator-manifest.json"
    path.unlink(missing_ok=True)  # only this emulator's manifest may be read
    child = await children.spawn(
        "emulator",
        [
            PYTHON,
            "-m",
            "chaos.emulator",
            "--manifest",
            str(path),
            "--images",
            str(plan.images),
            "--big",
            str(plan.big),
            "--probe-images",
            str(plan.probe_images),
            "--seed",
            str(plan.seed),
            "--latency-s",
            str(plan.latency_s),
        ],
    )
    deadline = time.monotonic() + EMULATOR_START_TIMEOUT_S
    while not path.exists():
        if child.proc.returncode is not None:
            raise RuntimeError(f"the emulator exited with {child.proc.returncode}:\n{child.tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the emulator wrote no manifest:\n{child.tail()}")
        await asyncio.sleep(0.1)
    return DriveManifest.read(path)


async def run(
    plan: Plan, names: list[str], baseline_s: float, work_dir: Path, log_dir: Path, outcomes: list[Outcome]
) -> int:
    """Runs the scenarios into `outcomes` (kept by the caller if this is interrupted); returns manifest bytes."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    children = Children(log_dir)
    servers = Servers(work_dir / "servers")
    try:
        print(f"[{time.strftime('%H:%M:%S')}] starting the servers and the Drive emulator", flush=True)
        manifest, stack = await asyncio.gather(launch_emulator(children, plan), servers.start())
        runner = Runner(plan, servers, stack, manifest, log_dir)
        if baseline_s:
            runner.baseline_s = baseline_s
        for index, name in enumerate(names):
            outcomes.append(await runner.run(index, BY_NAME[name]))
            if name == "clean" and outcomes[-1].error:
                # fotoowl did not even start (or the harness broke): every scenario would say the same.
                print("the clean run could not run; the other scenarios are skipped", flush=True)
                break
        return sum(f.size for f in manifest.folders["main"].files)
    finally:
        await children.stop_all()
        await servers.stop()
        servers.keep_logs(log_dir / "servers")


def _version() -> str:
    """The checkout's commit; and where fotoowl really came from when not from it (PYTHONPATH)."""
    code = Path(fotoowl.__file__).resolve().parents[1]
    checkout = (HERE.parent / "src").resolve()
    return product_version() + ("" if code == checkout else f"; fotoowl code imported from {code}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    plan = make_plan(args)
    chosen = [n.strip() for n in args.only.split(",") if n.strip()] or list(BY_NAME)
    unknown = [n for n in chosen if n not in BY_NAME]
    if unknown:
        raise SystemExit(f"unknown scenarios {unknown}; choose from {', '.join(BY_NAME)}")
    if args.baseline_s:
        chosen = [n for n in chosen if n != "clean"]
    elif "clean" not in chosen:
        chosen.insert(0, "clean")
    names = [s.name for s in SCENARIOS if s.name in chosen]  # always in the order
    output = args.output or (HERE / "RESULTS-quick.md" if plan.quick else HERE.parent / "RELIABILITY.md")
    started, date = time.monotonic(), datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    log_dir = HERE / "out" / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    work_dir = Path(tempfile.mkdtemp(prefix="fotoowl-chaos-"))
    print(f"logs in {log_dir}, servers in {work_dir}", flush=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    # Warnings of the harness's own libraries (a proxy's upstream vanishing, the harness's database pool
    # during an outage) are expected under faults: kept in a file, off the progress output.
    logging.basicConfig(
        filename=log_dir / "harness.log", level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    outcomes: list[Outcome] = []
    manifest_bytes = 0
    try:
        manifest_bytes = asyncio.run(run(plan, names, args.baseline_s, work_dir, log_dir, outcomes))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: every process stopped; no report written", file=sys.stderr)
        sys.exit(130)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    command = ("python -m chaos " + shlex.join(argv if argv is not None else sys.argv[1:])).strip()
    text = report.document(
        outcomes,
        plan,
        command=command,
        date=date,
        version=_version(),
        wall_s=time.monotonic() - started,
        manifest_bytes=manifest_bytes,
    )
    output.write_text(text)
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / "results.json").write_text(report.to_json(outcomes, plan))
    print("\n" + text, flush=True)
    print(f"written to {output}; logs and results.json in {log_dir}", flush=True)
    sys.exit(0 if outcomes and all(o.passed for o in outcomes) else 1)


if __name__ == "__main__":
    main()
