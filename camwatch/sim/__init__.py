"""A simulated camera fleet on loopback: real RTSP and ONVIF servers driven by named scenarios.

Used by ``camwatch simulate``, ``camwatch demo``, the tests and the benchmarks.
"""
