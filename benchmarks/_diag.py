import torch
from kernels.memset import raw_memset
for gb in [1, 4, 27]:
    slab = torch.empty(gb << 30, dtype=torch.uint8, device="cuda")
    t = slab[6291712:6291712+131072]
    try:
        raw_memset(t, 2 << 20); torch.cuda.synchronize(); print(gb, "ok")
    except Exception as e: print(gb, e)
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        try:
            raw_memset(t, 2 << 20); torch.cuda.synchronize(); print(gb, "side ok")
        except Exception as e: print(gb, "side", e)
    print(torch.cuda.memory_snapshot()[-1]["total_size"] if torch.cuda.memory_snapshot() else None, len(torch.cuda.memory_snapshot()))
    del slab, t; torch.cuda.empty_cache()
