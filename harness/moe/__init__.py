"""The MoE domain: the first user of the core. Its scenario schema (model shapes x capture sizes x stage1
allocation policies), its workload and tolerance table, the footprint model, and its cases run through the core."""
