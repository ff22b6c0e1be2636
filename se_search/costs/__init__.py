"""What a candidate costs, known before it trains: parameters and FLOPs (counted, or from a
closed-form table per backbone), and latency (measured by the one timing loop, or predicted
by a lookup table of per-site deltas kept in the results database).
"""
