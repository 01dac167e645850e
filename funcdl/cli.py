"""The `funcdl` command: `funcdl --version`, `gradcheck`, `list`, `run NAME`, `demo`.

Each subcommand is a `run_<name>(options) -> exit code` registered in `build_parser`: the
gradient check here, the examples' commands in `funcdl.example_commands`. A usage mistake
prints one line to stderr and exits with code 2 (no traceback); every argument, the pictures'
folder included, is checked before any training starts. `run` and `demo` turn on JAX's
persistent compilation cache (`example_commands.enable_compilation_cache`). The command sits on
top of `funcdl.examples` (which never imports it).
"""
import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import funcdl
from funcdl import ops
from funcdl.example_commands import OPTIMIZERS, example_name, run_demo, run_list, run_run
from funcdl.gradcheck import check_grads, format_reports
from funcdl.gradcheck_array import array_cases


def gradcheck_cases():
    """{name: (f, args, argnums)}: every op of `fdl.ops` and every operator at least once.

    Inputs are float64, drawn with a fixed seed away from every kink (|x| >= 0.2 at abs, relu,
    leaky_relu and where; maximum/minimum operands, clip bounds and the entries under `max` at
    least 0.1 apart; the MLP's relu inputs at least 0.01 from 0), so finite differences
    (steps of 1e-6) are valid everywhere.
    """
    rng = np.random.default_rng(0)

    def away(*shape):  # |x| in [0.2, 1.2], random sign
        return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.2, 1.2, shape)

    def positive(*shape):
        return rng.uniform(0.5, 2.0, shape)

    def total(y):  # a readout with fan-out, so the gradient is not a constant
        return ops.sum(y * y)

    x = away(2, 3)
    y = x + rng.choice([-1.0, 1.0], (2, 3)) * rng.uniform(0.2, 0.6, (2, 3))  # |x - y| >= 0.2
    unary = {name: (lambda x, op=getattr(ops, name): total(op(x)), (x,), 0)
             for name in ("exp", "square", "abs", "tanh", "sigmoid", "relu", "softplus")}
    distinct = np.arange(24.0).reshape(2, 3, 4)[..., rng.permutation(4)] / 10  # no ties for max
    labels = np.array([0, 2, 1, 2, 0])
    mlp = {"w1": away(4, 8) / 2, "b1": away(8), "w2": away(8, 3), "b2": away(3)}
    seen = np.array([[[True, False, True, True, False], [False] * 5, [True, True, False, True, True]]])
    return {
        **unary,
        "log": (lambda x: total(ops.log(x)), (positive(2, 3),), 0),
        "sqrt": (lambda x: total(ops.sqrt(x)), (positive(2, 3),), 0),
        "leaky_relu": (lambda x: total(ops.leaky_relu(x, 0.1)), (x,), 0),
        "binary_cross_entropy": (lambda p, t: ops.sum(ops.binary_cross_entropy(ops.sigmoid(p), t)),
                                 (x, rng.uniform(0, 1, (2, 3))), (0, 1)),
        "maximum": (lambda a, b: total(ops.maximum(a, b)), (x, y), (0, 1)),
        "minimum": (lambda a, b: total(ops.minimum(a, b)), (x, y), (0, 1)),
        "where": (lambda a, b: total(ops.where(a > 0, a * 2.0, b)), (x, y), (0, 1)),
        "clip": (lambda a: total(ops.clip(a, -0.5, 0.9)), (np.array([-1.0, -0.3, 0.2, 1.1]),), 0),
        "clip_array_bounds": (lambda a, lo, hi: total(ops.clip(a, lo, hi)),
                              (np.array([-1.0, 0.0, 2.0]), np.full(3, -0.5), np.full(3, 0.5)), (0, 1, 2)),
        "sum_keepdims": (lambda a: total(ops.sum(a, axis=1, keepdims=True) * a), (x,), 0),
        "mean_axes": (lambda a: total(ops.mean(a, axis=(0, 2))), (away(2, 3, 4),), 0),
        "max_axis": (lambda a: total(ops.max(a, axis=2)), (distinct,), 0),
        "logsumexp": (lambda a: total(ops.logsumexp(a, axis=-1)), (x,), 0),
        "softmax": (lambda a: total(ops.softmax(a, axis=0) * y), (x,), 0),
        "log_softmax": (lambda a: total(ops.log_softmax(a)), (x,), 0),
        "matmul": (lambda a, b: total(ops.matmul(a, b)), (x, away(3, 4)), (0, 1)),
        "matmul_batch_dims": (lambda a, b: total(a @ b), (away(2, 3, 4), away(2, 4, 2)), (0, 1)),
        "matmul_broadcast_batch": (lambda a, b: total(a @ b), (away(2, 3, 4), away(4, 2)), (0, 1)),
        "matmul_vector": (lambda v, m: total(v @ m @ v), (away(3), away(3, 3)), (0, 1)),
        "transpose": (lambda a: total(ops.transpose(a, (2, 0, 1)) * distinct.transpose(2, 0, 1)),
                      (away(2, 3, 4),), 0),
        "reshape_T": (lambda a: total((ops.reshape(a, (3, -1)) * a.T) @ a), (away(4, 3),), 0),
        "concatenate": (lambda a, b: total(ops.concatenate([a, b, a], axis=1) * 1.5), (x, y), (0, 1)),
        "indexing": (lambda a: total(a[1:, ::2]) + total(a[np.array([0, 0, 1])]) + total(a[..., 0]),
                     (away(3, 4),), 0),
        "operators": (lambda a, b: total(2.0 - a / b + a ** 3 - 1.5 ** a + (-a) * np.full((2, 3), 0.5)),
                      (x, y), (0, 1)),
        "power": (lambda a, b: total(a ** b + b ** 2), (positive(2, 3), y), (0, 1)),
        "broadcasting_ranks": (lambda a, b, c: total(a + b * c - c / (1.0 + a * a)),
                               (away(3, 1), away(4), away(2, 1, 1)), (0, 1, 2)),
        "broadcasting_size_1": (lambda a, b: total(a * b), (away(2, 1, 3), away(1, 4, 1)), (0, 1)),
        "mlp_softmax_cross_entropy": (_mlp_loss, (mlp, away(5, 4), labels), 0),
        # ---- layer ops (conv, pooling, erf/gelu/silu, take); pooled inputs are distinct
        "conv2d": (lambda x, w, b: total(ops.conv2d(x, w, b, stride=(2, 1), padding=1, dilation=(1, 2))),
                   (away(2, 3, 6, 7), away(4, 3, 3, 2), away(4)), (0, 1, 2)),
        "conv2d_groups_same": (lambda x, w: total(ops.conv2d(x, w, padding="same", groups=2)),
                               (away(1, 4, 5, 5), away(6, 2, 2, 3)), (0, 1)),
        "conv1d_unbatched": (lambda x, w: total(ops.conv1d(x, w, stride=2)), (away(3, 9), away(2, 3, 3)), (0, 1)),
        "max_pool2d": (lambda a: total(ops.max_pool2d(a, 3, 2, 1)),
                       (rng.permutation(2 * 3 * 7 * 6).reshape(2, 3, 7, 6) / 100.0,), 0),
        "avg_pool2d": (lambda a: total(ops.avg_pool2d(a, (2, 3), (1, 2), (1, 1))), (away(2, 2, 5, 6),), 0),
        "erf": (lambda a: total(ops.erf(a)), (x,), 0),
        "gelu": (lambda a: total(ops.gelu(a)), (x,), 0),
        "gelu_tanh": (lambda a: total(ops.gelu(a, approximate="tanh")), (x,), 0),
        "silu": (lambda a: total(ops.silu(a)), (x,), 0),
        "take_repeated": (lambda a: total(ops.take(a, np.array([[2, 0], [2, 2]]), axis=1)), (away(2, 3, 4),), 0),
        # issue 9's ops
        "sin_cos_log1p_expm1": (lambda a: total(ops.sin(a) * ops.cos(a) + ops.log1p(a * a) + ops.expm1(a)), (x,), 0),
        "min_var": (lambda a: total(ops.min(a, axis=2)) + total(ops.var(a, axis=(0, 2), ddof=1)), (distinct,), 0),
        "stack_expand_squeeze_astype": (lambda a, b: total(ops.squeeze(ops.expand_dims(ops.stack([a, b], axis=1), 0))
                                                       * ops.astype(a, np.float64)[:, None]),
                                        (x, y), (0, 1)),
        # attention: a bool mask with a query that sees no key (zeros, as PyTorch), and causal
        "scaled_dot_product_attention": (
            lambda q, k, v: total(ops.scaled_dot_product_attention(q, k, v, attn_mask=seen)),
            (away(2, 3, 4), away(2, 5, 4), away(2, 5, 3)), (0, 1, 2)),
        "scaled_dot_product_attention_causal": (
            lambda q, k, v: total(ops.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.7)),
            (away(1, 4, 2), away(1, 4, 2), away(1, 4, 3)), (0, 1, 2)),
        # fdl.ops.scan: a tanh recurrence over 4 steps, the carry and the weight differentiated
        "scan_recurrence": (
            lambda h, w, xs: total(ops.scan(lambda c, x_t: (ops.tanh(c @ w + x_t), c * x_t), h, xs)[1]),
            (away(2, 3), away(3, 3) / 2, away(4, 2, 3)), (0, 1, 2)),
        **array_cases(),  # the array API: rounding, einsum, sort, pad, ... (funcdl/gradcheck_array.py)
    }


def _mlp_loss(params, x, labels):
    """Mean softmax cross-entropy of a 2-layer MLP: x `(batch, in)`, labels `(batch,)` ints."""
    hidden = ops.tanh(x @ params["w1"] + params["b1"])
    logits = ops.relu(hidden) @ params["w2"] + params["b2"]
    targets = ops.one_hot(labels, 3, dtype=jnp.float64)
    return -ops.mean(ops.sum(targets * ops.log_softmax(logits, axis=1), axis=1))


# Cases whose function is not twice differentiable at its sampled points: `--order 2` skips
# them and prints why. (The built-in points lie away from every kink, where each op's second
# derivative exists; a case added at a kink belongs here.)
NOT_TWICE_DIFFERENTIABLE = {}


def run_gradcheck(options):
    """Check the built-in cases (all, or those named); print one table. Exit 0 if all pass.

    --order 2 checks second order instead: each case's Hessian by fdl.autodiff (the tape
    differentiating its own backward pass) against jax.hessian, and H v against central
    differences of the gradient; cases not twice differentiable at their points are skipped
    with the reason printed.
    """
    start = time.perf_counter()
    cases = gradcheck_cases()
    order = getattr(options, "order", 1)
    reports = {}
    # The cases broadcast between ranks on purpose, whatever the caller's configuration.
    with jax.numpy_rank_promotion("allow"), jax.enable_x64(True):
        for name in options.cases or cases:
            f, args, argnums = cases[name]
            if order == 2 and name in NOT_TWICE_DIFFERENTIABLE:
                print(f"skipped {name}: {NOT_TWICE_DIFFERENTIABLE[name]}")
                continue
            try:
                reports[name] = check_grads(f, args, argnums=argnums, order=order)
            except AssertionError as failure:  # carries the report
                reports[name] = failure.args[0]
    print(format_reports(reports))
    failed = [name for name, report in reports.items() if not report.passed]
    leaves = sum(len(report.leaves) for report in reports.values())
    verdict = "all passed" if not failed else "FAILED: " + ", ".join(failed)
    print(f"\n{len(reports)} functions, {leaves} leaves: {verdict} "
          f"({time.perf_counter() - start:.1f} s)")
    return 1 if failed else 0


def _case_name(name):
    if name not in gradcheck_cases():
        raise argparse.ArgumentTypeError(f"unknown case {name!r}")  # error() adds the --help hint
    return name


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        if not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value
    return parse


class _OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser():
    parser = _OneLineParser(
        prog="funcdl", description="funcdl: a functional deep-learning framework on JAX.")
    parser.add_argument("--version", action="version", version=f"funcdl {funcdl.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="command", required=True)
    gradcheck = commands.add_parser(
        "gradcheck", help="check fdl.autodiff against jax.grad and finite differences",
        description=run_gradcheck.__doc__)
    # A `type` check, not `choices`: argparse (< 3.12) rejects an empty `*` list with choices.
    gradcheck.add_argument("cases", nargs="*", metavar="case", type=_case_name,
                           help=f"built-in cases to check (default: all): {', '.join(gradcheck_cases())}")
    gradcheck.add_argument("--order", type=int, choices=(1, 2), default=1,
                           help="1: gradients (default); 2: Hessians and Hessian-vector products")
    gradcheck.set_defaults(run=run_gradcheck)

    listing = commands.add_parser("list", help="the examples: name, seed, what each shows",
                                  description=run_list.__doc__)
    listing.set_defaults(run=run_list)

    run = commands.add_parser("run", help="run one example", description=run_run.__doc__)
    run.add_argument("name", type=example_name, metavar="NAME", help="an example (see `funcdl list`)")
    run.add_argument("--epochs", type=_positive(int), metavar="N")
    run.add_argument("--lr", type=_positive(float), metavar="X")
    run.add_argument("--optimizer", choices=OPTIMIZERS, metavar="NAME", help=", ".join(OPTIMIZERS))
    run.add_argument("--backend", choices=("jax", "funcdl"), help="the autodiff: jax.grad or fdl.autodiff")
    run.add_argument("--model", choices=("mlp", "cnn", "resnet"),
                     help="digits only: the classifier")
    run.add_argument("--out", metavar="DIR", help="where the pictures go (default runs/NAME/)")
    run.add_argument("--quick", action="store_true", help="a shorter run (what the tests use)")
    run.add_argument("--no-cache", action="store_true", help="no persistent compilation cache")
    run.set_defaults(run=run_run, parser=run)

    demo = commands.add_parser("demo", help="every example, then a table against the seeds",
                               description=run_demo.__doc__)
    demo.add_argument("--out", metavar="DIR", help="where the pictures go (default runs/demo/)")
    demo.add_argument("--no-cache", action="store_true", help="no persistent compilation cache")
    demo.set_defaults(run=run_demo, parser=demo)
    return parser


def main(argv=None):
    """Parse `argv` (default: sys.argv[1:]), run the subcommand, return its exit code.

    argparse exits with code 2 on a usage error (e.g. an unknown subcommand).
    """
    options = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return options.run(options)
