"""The paper's comparisons at small scale, each a command of ``nt-llm``: reproduce (the four methods over seeds),
sweep (head depth x density), ablate (one NeuroTrails setting at a time), head-gradients (how far the heads agree
on the shared weights)."""
