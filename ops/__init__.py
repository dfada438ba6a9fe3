"""optillm-proxy ops toolkit: probes, lint and layout knowledge for a hardened OptiLLM 0.3.12."""
