"""Draws the PNG plots of viewcast-bench from the JSON it writes: python plot.py KIND IN.json OUT.png.

KIND: latency (CDF of update latency per system), first-frame (CDF of time to first frame),
rss (server RSS over time per system), ingest (events/s bars).
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    kind, src, out = sys.argv[1:4]
    with open(src) as f:
        data = json.load(f)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    title = data.get("title", "")
    if kind in ("latency", "first-frame"):
        key = "latency_cdf" if kind == "latency" else "first_frame_cdf"
        for run in data["runs"]:
            pts = run.get(key) or []
            if pts:
                ax.plot([p[1] for p in pts], [p[0] * 100 for p in pts], label=run["system"])
        ax.set_xscale("log")
        ax.set_xlabel("ms" + (" (receive time - message ts)" if kind == "latency" else " (connect start -> first frame)"))
        ax.set_ylabel("percent of messages" if kind == "latency" else "percent of clients")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    elif kind == "rss":
        for run in data["runs"]:
            pts = run.get("rss_series") or []
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=run["system"])
        ax.set_xlabel("seconds since server start")
        ax.set_ylabel("server RSS (MiB)")
        ax.grid(True, alpha=0.3)
        ax.legend()
    elif kind == "ingest":
        runs = data["runs"]
        labels = [f'{r.get("source", "loadgen")}, {r["workers"]} worker(s)' for r in runs]
        ax.bar(labels, [r["events_per_s"] for r in runs])
        ax.set_ylabel("events/s through the demo's four views")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out)


if __name__ == "__main__":
    main()
