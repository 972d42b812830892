"""`graph-harness fuzz`: capture each size once, replay on fresh random inputs with the guards checked after every
replay, stop at the first access outside a buffer and write its reproduction."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from graph_harness.cli.common import (
    EXIT_INTERRUPTED,
    Subparsers,
    add_scenario_dir,
    add_sizes,
    budget_error,
    device_profile,
    gib,
    non_negative_int,
    positive_int,
    seconds,
    write_whole,
)
from graph_harness.errors import bad_value, display_path
from graph_harness.suite.plan import check_sizes, pick

if TYPE_CHECKING:
    from graph_harness.core.fuzz import FuzzRun


def _fuzz(args: argparse.Namespace, console: Console) -> int:
    """Fuzz one scenario variant; exit 1 on a finding (its reproduction written), 0 when none was found."""
    if args.hang_after is not None:
        os.environ["GRAPH_HARNESS_HANG_AFTER"] = repr(args.hang_after)
    from graph_harness.core.guard import GuardBudgetError
    from graph_harness.reports.fuzz import rate_text
    from graph_harness.suite.fuzz import fuzz_scenario, fuzz_variant, reproduction

    (scenario_id, scenario), = pick(args.scenario_dir, [args.scenario]).items()
    variant = fuzz_variant(scenario, scenario_id, args.variant)
    check_sizes(scenario_id, scenario, args.sizes or ())
    _check_out(args.out)
    sizes = sorted(set(args.sizes)) if args.sizes else scenario.sizes(device_profile())
    stderr = Console(stderr=True)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[shown]}"),
                   TimeElapsedColumn(), console=stderr, transient=True, disable=not stderr.is_terminal)
    with bar:
        task = bar.add_task(f"fuzz {scenario_id} {variant}", total=args.replays or args.seconds or 60.0,
                            shown="running eagerly and capturing")

        def progress(replays: int, spent: float) -> None:
            bar.update(task, completed=replays if args.replays else spent,
                       shown=f"{replays:,} replays, {rate_text(replays, spent)}, 0 violations")

        try:
            run = fuzz_scenario(scenario_id, scenario, variant, sizes, seed=args.seed, budget=args.guard_budget,
                                replays=args.replays, seconds=args.seconds, progress=progress)
        except KeyboardInterrupt:  # before the first replay: nothing was found
            console.print("interrupted before the first replay", markup=False, highlight=False)
            return EXIT_INTERRUPTED
        except GuardBudgetError as err:
            raise budget_error(args.guard_budget, err) from err
    _print_run(console, run)
    if run.finding is not None:
        out = args.out
        repro = reproduction(scenario_id, scenario, run, out)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise bad_value("--out", "", display_path(out), "a folder that can be made and written",
                            err.strerror or "") from err
        scenario_file, inputs_file = repro.files(out)
        write_whole(inputs_file, repro.inputs, "--out", "a writable folder")
        write_whole(scenario_file, repro.yaml_text, "--out", "a writable folder")
        console.print(f"saved: {display_path(scenario_file)}, {display_path(inputs_file)}", markup=False,
                      highlight=False, soft_wrap=True)
        console.print(f"repro: {repro.command}", markup=False, highlight=False, soft_wrap=True)
    if run.interrupted:
        return EXIT_INTERRUPTED
    if run.error is not None:
        from graph_harness.core.capture import wedged

        if wedged():
            console.file.flush()
            os._exit(1)  # exiting normally would wait on the hung kernel at teardown
        return 1
    return 0 if run.finding is None else 1


def _check_out(out: Path) -> None:
    """Fail now, before minutes of fuzzing, where a reproduction could not be written into `out` (made only when
    there is one to write)."""
    existing = next(p for p in (out, *out.parents) if p.exists()) if not out.exists() else out
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise bad_value("--out", "", display_path(out), "a folder that can be made and written",
                        "not a folder" if not existing.is_dir() else "not writable")


def _print_run(console: Console, run: FuzzRun) -> None:
    """What the run did and found, as plain lines; the verdict word coloured."""
    from graph_harness.reports.fuzz import fuzz_lines

    colours = {"FOUND": "red", "ERROR": "red", "clean": "green"}
    for text in fuzz_lines(run):
        word, sep, rest = text.partition(" " if not text.startswith("clean:") else ":")
        line = Text.assemble((word, colours[word]), sep + rest) if word in colours else Text(text)
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def add_fuzz(sub: Subparsers) -> None:
    parser = sub.add_parser("fuzz", help="replay captured graphs on fresh random inputs, the guards checked after "
                                         "every replay, until one accesses memory outside its buffers")
    parser.add_argument("scenario", metavar="SCENARIO", help="scenario id (YAML key)")
    parser.add_argument("--variant", "--policy", dest="variant", metavar="V",
                        help="the variant (an MoE scenario's policy) to fuzz (default: its first that must be clean)")
    add_sizes(parser, "capture sizes (default: the scenario's, cpu_sizes on CPU)")
    parser.add_argument("--replays", type=positive_int, metavar="N", help="stop after N checked replays")
    parser.add_argument("--seconds", type=seconds, metavar="S",
                        help="stop after S seconds of replaying (default: 60 when --replays is not given)")
    parser.add_argument("--seed", type=non_negative_int, metavar="N",
                        help="seed (default: the scenario's); replay i draws its inputs from seed N + 1 + i")
    parser.add_argument("--guard-budget", type=gib, metavar="GIB", help="guard slab size (default as for run)")
    parser.add_argument("--hang-after", type=seconds, metavar="S",
                        help="the floor of every run's bound, in seconds (default: 120)")
    parser.add_argument("--out", type=Path, default=Path("fuzz"), metavar="DIR",
                        help="where a finding's reproduction is written (default: ./fuzz)")
    add_scenario_dir(parser)
    parser.set_defaults(command=_fuzz)
