"""Client-side defences: reply transforms (pruning, DP conversions) and the model check. (The guard, which
runs the server's attacks on a client's own update, is part of the audit: fedmjp.audit.guard.)"""
