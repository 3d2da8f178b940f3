"""Tables and plots from a results JSON written by run.py.

    python bench/report.py bench/results/latest.json [--docs docs]

markdown() gives the tables: the median over rounds of every figure per server, then one
ratio row per (ursula variant, reference variant) pair. update_docs() rewrites the marked
section of docs/benchmarks.md and draws docs/bench-<workload>.png (needs matplotlib).
"""

import argparse
import json
import os
import statistics
import sys

BEGIN = "<!-- BEGIN GENERATED: bench/run.py writes this section; do not edit by hand -->"
END = "<!-- END GENERATED -->"

TITLES = {
    "append": "Appends: {payload} B payloads, {conns} connections, each answer checked for 2xx",
    "producer": "Producer appends (Producer-Id/Epoch/Seq, one producer per connection and "
                "stream): {payload} B payloads, {conns} connections",
    "sse": "SSE fan-out: one JSON stream, a writer at ~{rate:g} appends/s for {duration:g} s, "
           "delivery latency = receive time - send time in the payload",
    "catchup": "Catch-up read of one stream from offset -1 (1 MiB appends to fill it)",
}
PARAM = {"append": "streams", "producer": "streams", "sse": "subscribers",
         "catchup": "MiB"}
# (key, column header, format, lower is better); rows show every figure the workload has
COLUMNS = {
    "append": [("appends_s", "appends/s", "{:.0f}"),
               ("appends_cpu_s", "appends per server CPU-s", "{:.0f}"),
               ("p50_ms", "p50 ms", "{:.2f}"),
               ("p99_ms", "p99 ms", "{:.2f}"), ("errors", "errors", "{:.0f}")],
    "sse": [("p50_ms", "p50 ms", "{:.1f}"), ("p99_ms", "p99 ms", "{:.1f}"),
            ("max_ms", "max ms", "{:.1f}"), ("delivered_ratio", "delivered/expected", "{:.4f}"),
            ("connect_s", "connect s", "{:.2f}")],
    "catchup": [("read_mb_s", "read MB/s", "{:.0f}"), ("fill_mb_s", "fill MB/s", "{:.1f}")],
}
COLUMNS["producer"] = COLUMNS["append"]
COMMON = [("peak_rss_mb", "peak RSS MB", "{:.0f}"), ("server_cpu", "server CPU %", "{:.0f}"),
          ("loadgen_cpu", "loadgen CPU %", "{:.0f}"), ("other_cpu", "other CPU %", "{:.0f}")]
HEADLINE = {"append": "appends_s", "producer": "appends_s", "sse": "p99_ms",
            "catchup": "read_mb_s"}


def medians(result):
    """{(case, server): {figure: median}} plus rounds and spread of the headline figure."""
    groups = {}
    for r in result["runs"]:
        if r["ok"]:
            groups.setdefault((r["case"], r["server"]), []).append(r)
    out = {}
    for key, runs in groups.items():
        wl = runs[0]["workload"]
        med = {}
        for k in runs[0]["figures"]:
            vals = [r["figures"][k] for r in runs if isinstance(r["figures"].get(k), int | float)]
            if vals:
                med[k] = statistics.median(vals)
        if med.get("appends_s") and med.get("server_cpu"):
            # work per unit of CPU: independent of how many cores the server could use
            med["appends_cpu_s"] = med["appends_s"] / (med["server_cpu"] / 100)
        head = [r["figures"][HEADLINE[wl]] for r in runs]
        med["rounds"] = len(runs)
        med["spread"] = ((max(head) - min(head)) / med[HEADLINE[wl]] * 100
                         if med.get(HEADLINE[wl]) else 0.0)
        out[key] = med
    return out


def fmt(fmt_, v):
    return "–" if v is None else fmt_.format(v)


def ratio(a, b):
    if a is None or b is None:
        return "–"
    if b == 0:
        return "–" if a == 0 else "∞"
    return f"{a / b:.2f}"


def cases(result):
    seen = {}
    for r in result["runs"]:
        seen.setdefault(r["case"], (r["workload"], r["param"]))
    return seen


def markdown(result):
    cfg, med = result["config"], medians(result)
    srv = [s for s in result["servers"] if s["selected"] and not s.get("pending")]
    label = {s["name"]: s["label"] for s in result["servers"]}
    pairs = [(u, r) for u in srv if u["role"] == "ursula" for r in srv
             if r["name"] in u.get("compare", [])]
    lines, by_wl = [], {}
    for case, (wl, param) in cases(result).items():
        by_wl.setdefault(wl, []).append((case, param))
    for wl, cs in by_wl.items():
        cols = COLUMNS[wl] + COMMON
        lines += ["", f"**{TITLES[wl].format(**cfg)}**", "",
                  "| " + " | ".join([PARAM[wl], "server"] + [c[1] for c in cols]
                                    + ["rounds", f"spread of {HEADLINE[wl]}"]) + " |",
                  "|" + "---|" * (len(cols) + 4)]
        for case, param in cs:
            for s in srv:
                m = med.get((case, s["name"]))
                if m is None:
                    errs = {r.get("error", "") for r in result["runs"]
                            if r["case"] == case and r["server"] == s["name"]}
                    lines.append(f"| {param} | {s['label']} | FAILED: "
                                 f"{'; '.join(sorted(errs))[:150]} |" + " |" * (len(cols) + 1))
                    continue
                cells = [fmt(f, m.get(k)) for k, _, f in cols]
                lines.append(f"| {param} | {s['label']} | " + " | ".join(cells)
                             + f" | {m['rounds']} | {m['spread']:.0f}% |")
            for u, r in pairs:
                mu, mr = med.get((case, u["name"]), {}), med.get((case, r["name"]), {})
                cells = [ratio(mu.get(k), mr.get(k)) for k, _, _ in cols]
                lines.append(f"| {param} | *{label[u['name']]} / {label[r['name']]}* | "
                             + " | ".join(cells) + " | | |")
    lines += ["", "Figures are medians over rounds. A ratio row divides ursula's median by the "
              "reference's: above 1 means ursula's figure is higher (better for appends/s, "
              "MB/s and delivered/expected; worse for latency, errors, RSS and CPU)."]
    missing = [s for s in result["servers"] if s.get("pending") or not s["selected"]]
    if missing:
        lines += ["", "Not run:"]
        lines += [f"- {s['label']}: {s.get('pending') or 'not selected (--servers)'}"
                  for s in missing]
    return "\n".join(lines).lstrip("\n") + "\n"


def machine_md(result):
    m = result["machine"]
    return (f"- machine: {m['nproc']} CPUs ({m['cpu']}), {m['mem_gib']} GiB RAM, "
            f"Linux {m['kernel']}\n"
            f"- Python {m['python']}, Node {m['node']}, {m['wrk']}, ursula at git {m['git']}\n"
            f"- run started {result['started']}, took {result['elapsed_s'] / 60:.1f} min\n"
            f"- command: `{result['command']}`\n")


def plots(result, folder):
    """One PNG per workload: headline figure, latency or secondary figure, peak RSS."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plots (pip install matplotlib)", file=sys.stderr)
        return []
    med = medians(result)
    srv = [s for s in result["servers"] if s["selected"] and not s.get("pending")]
    by_wl = {}
    for case, (wl, param) in cases(result).items():
        by_wl.setdefault(wl, []).append((case, param))
    # (figure keys, title, log scale): several keys share one panel as x categories
    panels = {"append": [(["appends_s"], "appends/s", False),
                         (["p50_ms", "p99_ms"], "latency (ms, log)", True),
                         (["peak_rss_mb"], "peak RSS (MB)", False)],
              "sse": [(["p50_ms", "p99_ms", "max_ms"], "delivery latency (ms, log)", True),
                      (["delivered_ratio"], "delivered / expected", False),
                      (["peak_rss_mb"], "peak RSS (MB)", False)],
              "catchup": [(["read_mb_s"], "read MB/s", False),
                          (["peak_rss_mb"], "peak RSS (MB)", False)]}
    panels["producer"] = panels["append"]
    written = []
    for wl, cs in by_wl.items():
        fig, axes = plt.subplots(1, len(panels[wl]), figsize=(4.4 * len(panels[wl]), 3.9))
        width = 0.8 / max(1, len(srv))
        for ax, (keys, title, log) in zip(axes, panels[wl], strict=True):
            groups = [(c, k, f"{p}" + (f"\n{k.split('_')[0]}" if len(keys) > 1 else ""))
                      for c, p in cs for k in keys]
            for i, s in enumerate(srv):
                xs = [j + (i - (len(srv) - 1) / 2) * width for j in range(len(groups))]
                ys = [med.get((c, s["name"]), {}).get(k) or 0 for c, k, _ in groups]
                ax.bar(xs, ys, width, label=s["label"])
            ax.set_xticks(range(len(groups)), [g[2] for g in groups], fontsize=8)
            ax.set_xlabel(PARAM[wl], fontsize=8)
            if log:
                ax.set_yscale("log")
            ax.set_title(title, fontsize=10)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=len(srv), fontsize=8)
        fig.suptitle(f"{wl} (median of {result['config']['rounds']} rounds)", fontsize=11)
        fig.tight_layout(rect=(0, 0.07, 1, 1))
        path = os.path.join(folder, f"bench-{wl}.png")
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path)
    return written


def update_docs(result, docs):
    """Rewrite the generated section of docs/benchmarks.md and the PNGs."""
    os.makedirs(docs, exist_ok=True)
    pngs = plots(result, docs)
    section = "\n".join([
        BEGIN, "", machine_md(result), markdown(result),
        "\n".join(f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in pngs), "", END])
    path = os.path.join(docs, "benchmarks.md")
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n\n" + BEGIN + END
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    with open(path, "w") as f:
        f.write(text)
    print(f"updated {path} and {len(pngs)} plots", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results")
    p.add_argument("--docs", help="also rewrite benchmarks.md and the PNGs in this folder")
    a = p.parse_args()
    res = json.load(open(a.results))
    print(markdown(res))
    if a.docs:
        update_docs(res, a.docs)
