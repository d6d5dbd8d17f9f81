"""A kernel fast path for TURN ChannelData over UDP (eBPF at tc ingress), driven by the TURN engine."""
