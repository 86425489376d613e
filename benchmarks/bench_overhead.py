"""Harness overhead: ``streamscore bench`` at batch size 1 against a bare loop over session.run.

At batch size 1 a call takes tens of microseconds, so anything the harness does around
session.run (timestamps, bookkeeping, windows) shows most here. Each round times, on the
same model, batch size and thread count:

* bare     - the barest loop: ``run(names, feeds)`` back to back, calls counted;
* bare/t   - the same loop with a perf_counter_ns pair per call (for its p50);
* harness  - ``run_bench`` (the library call behind ``streamscore bench``), closed loop,
             concurrency 1, its calls/s and p50 from the reported windows.

Rounds alternate so drift on a shared machine hits all three alike; the medians and the
best rounds (least disturbed by other processes, as timeit reports) are compared. Target:
harness calls/s within 5 % of bare, i.e. ratio >= 0.95.

    .venv/bin/python benchmarks/bench_overhead.py [--model sample_data/models/fraud_mlp]
        [--rounds 20] [--seconds 0.6] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from streamscore.bench import BenchOptions, run_bench
from streamscore.bench.inputs import GeneratedInputs
from streamscore.model import resolve_model
from streamscore.model.session import load_model

ROOT = Path(__file__).resolve().parent.parent


def bare_calls_per_s(
    run: object, names: list[str], feeds: dict[str, np.ndarray], s: float
) -> float:
    call = run  # a local name: the loop below is as tight as Python allows
    assert callable(call)
    clock = time.perf_counter
    calls = 0
    started = clock()
    deadline = started + s
    while True:
        for _ in range(256):
            call(names, feeds)
        calls += 256
        now = clock()
        if now >= deadline:
            return calls / (now - started)


def bare_timed_p50_ms(
    run: object, names: list[str], feeds: dict[str, np.ndarray], s: float
) -> float:
    call = run
    assert callable(call)
    clock = time.perf_counter_ns
    times: list[int] = []
    add = times.append
    deadline = clock() + int(s * 1e9)
    while True:
        t0 = clock()
        call(names, feeds)
        t1 = clock()
        add(t1 - t0)
        if t1 >= deadline:
            return float(np.median(times)) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "sample_data" / "models" / "fraud_mlp"))
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=0.6)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    model = load_model(resolve_model(args.model), provider="cpu", threads=args.threads)
    names = model.signature.output_names()
    feeds = GeneratedInputs(model.signature, {}).feeds(1)
    run = model.session.run
    for _ in range(2000):  # warm-up
        run(names, feeds)
    options = BenchOptions(
        args.model,
        batch_sizes=(1,),
        threads=(args.threads,),
        warmup_s=0.1,
        window_s=args.seconds / 3,
        max_duration_s=args.seconds,
    )
    bare, bare_p50, harness, harness_p50, overhead = [], [], [], [], []
    print(f"model {model.ref.label}, batch size 1, {args.threads} thread(s), cpu")
    print(
        f"{'round':>5} {'bare calls/s':>13} {'bare/t p50 ms':>14} {'harness calls/s':>16} "
        f"{'harness p50 ms':>15} {'overhead':>9} {'ratio':>6}"
    )
    for i in range(args.rounds):
        bare.append(bare_calls_per_s(run, names, feeds, args.seconds))
        bare_p50.append(bare_timed_p50_ms(run, names, feeds, args.seconds / 2))
        result = run_bench(options).results[0]
        harness.append(result.calls_per_s)
        harness_p50.append(result.latency_ms.p50)
        overhead.append(result.overhead or 0.0)
        print(
            f"{i + 1:>5} {bare[-1]:>13,.0f} {bare_p50[-1]:>14.4f} {harness[-1]:>16,.0f} "
            f"{harness_p50[-1]:>15.4f} {overhead[-1]:>9.2%} {harness[-1] / bare[-1]:>6.3f}"
        )
    for label, pick in (("median", statistics.median), ("best", max)):
        b, h = pick(bare), pick(harness)
        ratio = h / b
        print(
            f"{label:>6}: bare {b:,.0f} calls/s ({1e3 / b:.4f} ms/call), harness {h:,.0f} "
            f"calls/s ({1e3 / h:.4f} ms/call); harness/bare = {ratio:.3f} "
            f"({'within' if ratio >= 0.95 else 'OUTSIDE'} the 5 % target)"
        )
    print(
        f"median p50: bare timed loop {statistics.median(bare_p50):.4f} ms, harness "
        f"{statistics.median(harness_p50):.4f} ms; harness's own overhead estimate "
        f"(time outside session.run) {statistics.median(overhead):.2%}"
    )


if __name__ == "__main__":
    main()
