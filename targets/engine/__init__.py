"""The packaging engine: a run is a graph of typed steps, each run in a warm, isolated process.

    graph.py       plan a run: the steps every requested target needs, shared ones once
    scheduler.py   run the graph: dependency order, bounded concurrency, one failure stays local
    workers.py     warm isolated processes, forked from a server that imported the toolchains
    forkserver.py  that server
    child.py       what runs inside a step process (also `python -m targets.engine.child`)
    cache.py       step results keyed by input digests, options and toolchain fingerprint
    steps.py       the steps Shipyard itself provides: prepare and reference outputs
    judge.py       compare an artifact's outputs with the reference and apply the gates
    fingerprint.py the toolchain versions and settings that shape a step's output

Flows and the CLI use `targets.pipeline`, never these modules directly.
"""
