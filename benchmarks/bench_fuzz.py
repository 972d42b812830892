"""How fast `graph-harness fuzz` checks replays, and where each replay's host time goes.

    python benchmarks/bench_fuzz.py [--scenario deepseek-v3-tp8-decode] [--policy pr2551] [--sizes 1] [--seconds 10]

Fuzzes the scenario in this process (as `graph-harness fuzz` does) and prints the rate with the phases of the
loop per checked replay: `inputs` (drawing fresh inputs and copying them into the static buffers), `replay`
(launching the graph), `guards` (queueing the check, and waiting for it to come back). On a GPU the host draws
the next inputs while the device replays, so the phases are host time and add up to the wall time per replay.
"""

from __future__ import annotations

import argparse
import json

from graph_harness.core import phases
from graph_harness.reports.fuzz import fuzz_lines
from graph_harness.suite.fuzz import fuzz_scenario
from graph_harness.suite.plan import pick


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="deepseek-v3-tp8-decode")
    parser.add_argument("--policy", default="pr2551")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    (scenario_id, scenario), = pick(None, [args.scenario]).items()
    phases.reset()
    run = fuzz_scenario(scenario_id, scenario, args.policy, args.sizes, seconds=args.seconds)
    totals = phases.totals()
    print("\n".join(fuzz_lines(run)))
    per = {name: round(1e6 * totals[name][0] / max(run.replays, 1), 1) for name in ("inputs", "replay", "guards")
           if name in totals}
    print(json.dumps({"device": run.env.device,
                      "scenario": scenario_id, "policy": args.policy, "sizes": list(run.sizes),
                      "replays": run.replays, "seconds": round(run.seconds, 2), "rate": round(run.rate, 1),
                      "host_us_per_replay": per, "wall_us_per_replay": round(1e6 * run.seconds / max(run.replays, 1),
                                                                            1)}, indent=2))


if __name__ == "__main__":
    main()
