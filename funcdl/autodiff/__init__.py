"""funcdl's own small reverse-mode autodiff: a tape of `Tensor` nodes and one VJP table.

`grad` / `value_and_grad` have jax's calling convention; the same function runs under
`jax.grad`, which is how the two are cross-checked (`fdl.gradcheck`). They nest
(`grad(grad(f))`, no jax in between), and `vjp`, `jacobian`, `hessian`, `hvp` are built on the
same tape.
"""
from funcdl.autodiff.grad import grad, value_and_grad
from funcdl.autodiff.jacobians import hessian, hvp, jacobian, vjp
from funcdl.autodiff.tensor import Tensor, apply

__all__ = ["Tensor", "apply", "grad", "value_and_grad", "vjp", "jacobian", "hessian", "hvp"]

# The layer primitives (conv, pooling, erf/gelu/silu, take) live in a table of their own.
from funcdl.autodiff import scan_rule, vjps, vjps_array, vjps_layers  # noqa: E402
vjps.PRIMITIVES.update(vjps_layers.LAYER_PRIMITIVES)
vjps.PRIMITIVES.update(vjps_array.ARRAY_PRIMITIVES)  # rounding, more elementwise, einsum, sort, ...
vjps.PRIMITIVES.update(scan_rule.SCAN_PRIMITIVES)  # fdl.ops.scan: one node, the reverse scan as its rule
