import time, torch, sys
from harness.scenario import *
from harness.run import *
from kernels.contracts import Policy
sc = load_scenarios(scenario_files(find_scenario_dir()))
dev = torch.device("cuda")
for sid in sys.argv[1:]:
    s = sc[sid]
    for pol in s.policies:
        t=time.perf_counter()
        cases = resolve_cases(sid, s, pol, capture_sizes(s, "gpu")[:3], "gpu")
        for r in run_cases(cases, dev):
            print(sid, pol.value, r.capture_size, r.verdict, r.expected, r.passed, r.reason[:150], f"err={r.max_rel_err:.2e}" if r.max_rel_err is not None else None, r.eager_us, r.replay_us, flush=True)
            for v in r.violations: print("   ", v)
            for n in r.notes: print("   note:", n[:200])
        print(f"  {time.perf_counter()-t:.1f}s", flush=True)
