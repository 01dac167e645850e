"""The activations beyond the seeds as layers: `GELU`, `SiLU` (PyTorch's formulas)."""
from funcdl import ops
from funcdl.construction import recorded
from funcdl.nn.layers import check_inplace
from funcdl.nn.model import Model, parameter_free


@recorded
def GELU(approximate: str = "none") -> Model:
    """x Φ(x) elementwise, or its tanh approximation for ``approximate="tanh"``
    (see ``fdl.ops.gelu``). x: any shape -> the same shape. PyTorch: ``torch.nn.GELU``."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"GELU: `approximate` must be 'none' or 'tanh', got {approximate!r}")
    name = "GELU()" if approximate == "none" else "GELU(approximate='tanh')"
    return parameter_free(name, lambda x: ops.gelu(x, approximate))


@recorded
def SiLU(inplace: bool = False) -> Model:
    """x σ(x) elementwise (swish). x: any shape -> the same shape. PyTorch: ``torch.nn.SiLU``
    (`inplace` accepted and ignored)."""
    check_inplace(inplace, "SiLU")
    return parameter_free("SiLU()", ops.silu)
