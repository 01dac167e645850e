"""MkDocs hooks of funcdl's documentation site (mkdocs.yml: `hooks:`).

Two markers in a page's Markdown are expanded when the site is built, so that the pages cannot
drift from the code and the measurements:

- `<!-- api: funcdl.nn -->` becomes one mkdocstrings entry (`::: funcdl.nn.Linear`) per name of
  that module's `__all__`, in its order: every public name has a reference entry, anchored at
  its public dotted path (`#funcdl.nn.Linear`).
- `<!-- bench: FILE KIND [KEY] -->` becomes a Markdown table read from the committed JSON
  `benchmarks/results/FILE` (KIND: autodiff, chain-speed, chain-memory, cnn, train, sweep, devices,
  sequence, stream; KEY: the CNN, the training workload or the sequence workload). A stream
  table is the one `benchmarks/train_stream.py` prints.
"""
import importlib
import importlib.util
import inspect
import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

API_MARKER = re.compile(r"<!-- api: ([\w.]+) -->")
BENCH_MARKER = re.compile(r"<!-- bench: (\S+) (\S+)(?: (.+?))? -->")

if str(ROOT) not in sys.path:  # document this checkout's funcdl, installed or not
    sys.path.insert(0, str(ROOT))

# the ratios of a sweep table's summary (benchmarks/train_sweep.py), each where recorded
SWEEP_RATIOS = (("Sweep / fits", "sweep_over_fits"),
                ("Hand-vmapped / hand-written scans", "hand_vmapped_over_hand_loops"),
                ("Sweep / hand-vmapped", "sweep_over_hand_vmapped"),
                ("Hand-written lax.map / hand-written scans", "hand_mapped_over_hand_loops"))


def public_names(module_name):
    """The names of `module_name.__all__` (imported from this checkout)."""
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:
        raise ValueError(f"{module_name} has no __all__: the API page cannot list its names")
    return list(names)


def api_entry(module_name, name):
    """`::: module.name`. For a function that shadows a submodule of the same name
    (`funcdl.train.fit`, the function, over `funcdl/train/fit.py`) and for another name of a
    function (`funcdl.losses.mae = l1_loss`), the entry of the function where it is defined,
    under its public name and an anchor at the public dotted path: the documentation's loader
    would otherwise document the submodule, or an attribute without signature or docstring."""
    public = f"{module_name}.{name}"
    module = importlib.import_module(module_name)
    obj = getattr(module, name)
    shadows = (hasattr(module, "__path__") and not inspect.ismodule(obj)
               and importlib.util.find_spec(public) is not None)
    alias = inspect.isfunction(obj) and obj.__name__ != name  # `mae = l1_loss`
    if not (shadows or alias):
        return f"::: {public}"
    defined = f"{obj.__module__}.{obj.__qualname__}"
    return (f'<a id="{public}"></a>\n\n::: {defined}\n    options:\n'
            f'      heading: "{public}"\n      toc_label: "{name}"')


def api_entries(module_name):
    return "\n\n".join(api_entry(module_name, name) for name in public_names(module_name))


def _number(value, digits):
    return "" if value is None else f"{value:.{digits}f}"


def _table(header, rows, align):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _timing_rows(results):
    return [(r["implementation"], _number(r["median_ms"], 3), _number(r["ratio_to_jax_jit"], 2),
             _number(r["compile_s"], 2)) for r in results]


def bench_table(file, kind, key=None):
    data = json.loads((RESULTS / file).read_text())
    if kind == "autodiff":
        return _table(["implementation", "median ms", "ratio to (a)", "compile s"],
                      _timing_rows(data["results"]), ["---", "---:", "---:", "---:"])
    if kind == "cnn":
        entry = data["cnn"][key]
        hlo = ", ".join(f"{name}: {n} HLO instructions, {convs} convolutions"
                        for name, (n, convs) in entry["hlo_ops"].items())
        return (_table([f"{key}", "median ms", "ratio to (a)", "compile s"],
                       _timing_rows(entry["results"]), ["---", "---:", "---:", "---:"])
                + f"\n\nCompiled programs: {hlo}.")
    if kind == "chain-speed":
        speed = data["chain"]["speed"]
        rows = []
        for r in speed["rows"]:
            forward, backward = r["forward_us_per_op"], r["backward_us_per_op"]
            total = None if backward is None else forward + backward
            rows.append((r["implementation"], _number(forward, 1), _number(backward, 1),
                         _number(total, 1)))
        return _table([f"{speed['ops']:,} ops of shape {tuple(speed['shape'])}", "forward µs/op",
                       "backward µs/op", "total µs/op"], rows, ["---", "---:", "---:", "---:"])
    if kind == "chain-memory":
        memory = data["chain"]["memory"]
        rows = [(r["implementation"], _number(r["bytes_per_node"] / 1000, 2))
                for r in memory["rows"]]
        return _table([f"{memory['ops']:,} ops of shape {tuple(memory['shape'])} "
                       f"{memory['dtype']}", "KB per node"], rows, ["---", "---:"])
    if kind == "train":
        workload = data["results"][key]
        base = workload["jax+optax scan"]["seconds"]
        rows = []
        for name, r in workload.items():
            dispatched = "" if r.get("dispatched") is None else f"{100 * r['dispatched']:.0f}%"
            rel = r.get("rel_diff_vs_fit")
            rows.append((name, _number(1000 * r["seconds"], 2),
                         "-" if name.startswith("host->device") else _number(r["seconds"] / base, 2),
                         _number(r["compile_s"], 2), dispatched,
                         "" if rel is None else f"{rel:.1e}"))
        return _table(["implementation", "median ms", "x hand scan", "compile s", "dispatched",
                       "rel diff vs fit"], rows, ["---", "---:", "---:", "---:", "---:", "---:"])
    if kind == "sweep":  # bench_train's mlp_sweep: K fits against one sweep
        rows = [(name, _number(r["seconds"], 3),
                 f"{_number(r['min_seconds'], 3)}-{_number(r['max_seconds'], 3)}",
                 r["compiles"], _number(r["compile_events_s"], 2),
                 "" if "rel_diff_vs_fits" not in r else f"{r['rel_diff_vs_fits']:.1e}")
                for name, r in data["results"][key].items() if name != "summary"]
        ratio = data["results"][key]["summary"]
        return (_table(["implementation", "median s", "min-max s", "compiles",
                        "compile events s", "rel diff"], rows,
                       ["---", "---:", "---:", "---:", "---:", "---:"])
                + "\n\n" + " ".join(
                    f"{label}: {ratio[field]:.2f}x (median), {ratio[field + '_fastest']:.2f}x "
                    f"(fastest rounds), {ratio[field + '_cpu']:.2f}x (CPU time)."
                    for label, field in SWEEP_RATIOS if field in ratio))
    if kind == "devices":
        rows = [(r["devices"], f"{r['rows_per_s']:,.0f}", _number(r["seconds"], 2),
                 _number(r["compile_s"], 2)) for r in data["devices"]]
        return _table(["devices", "rows/s", "epoch s", "compile s"], rows,
                      ["---:", "---:", "---:", "---:"])
    if kind == "sequence":  # bench_sequence: KEY the workload (lstm, transformer)
        entry = data["workloads"][key or "lstm"] if "workloads" in data else data
        rows = [(r["name"], _number(r["ms_per_step"], 1), _number(r["vs_hand_jax"], 2),
                 _number(r["compile_s"], 2)) for r in entry["rows"]]
        return _table(["implementation", "ms per step", "x hand-written JAX", "compile s"], rows,
                      ["---", "---:", "---:", "---:"])
    if kind == "stream":  # bench_train's mlp_stream: streamed fit against in-memory fit
        if str(ROOT / "benchmarks") not in sys.path:
            sys.path.insert(0, str(ROOT / "benchmarks"))
        from train_stream import stream_markdown
        return stream_markdown(key or "mlp_stream", data["results"][key or "mlp_stream"],
                               data.get("mlp_stream_memory"))
    if kind == "date":
        return data["date"][:16].replace("T", " ") + " UTC"
    raise ValueError(f"unknown benchmark table kind {kind!r} (in <!-- bench: {file} ... -->)")


def on_page_markdown(markdown, page, config, files):
    markdown = API_MARKER.sub(lambda m: api_entries(m.group(1)), markdown)
    return BENCH_MARKER.sub(lambda m: bench_table(m.group(1), m.group(2), m.group(3)), markdown)
