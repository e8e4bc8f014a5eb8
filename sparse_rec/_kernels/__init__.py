"""Compiled kernels: plain arrays in, plain arrays out; no scipy, no sklearn.

Kernels never raise: callers validate before a launch and check finiteness
after it.
"""
