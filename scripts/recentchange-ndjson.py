#!/usr/bin/env python3
"""Writes N recentchange events as NDJSON (or, with --sse, as the 2020 curl-appended SSE text) to
stdout: the shared fixture's events with distinct ids and a skewed set of 10,000 users. Input for
`viewcast replay` and the ingest benchmark."""
import json, random, sys

args = [a for a in sys.argv[1:] if not a.startswith("--")]
n = int(args[0]) if args else 1_000_000
sse = "--sse" in sys.argv
fixture = args[1] if len(args) > 1 else "crates/sources/tests/fixtures/recentchange-sample.sse"
templates = [json.loads(l[6:]) for l in open(fixture, encoding="utf-8") if l.startswith("data: ")]
rng = random.Random(7)
out = sys.stdout
for i in range(n):
    e = dict(templates[i % len(templates)])
    e["meta"] = dict(e["meta"], offset=i, id=f"evt-{i}")
    e["id"] = i
    e["user"] = f"user-{int(rng.paretovariate(1.2)) % 10_000}"
    data = json.dumps(e, ensure_ascii=False, separators=(",", ":"))
    if sse:
        out.write(f'event: message\nid: [{{"offset":{i}}}]\ndata: {data}\n\n')
    else:
        out.write(data + "\n")
