"""What a shape error of a sequence layer adds when the input's layout is the likely mistake.

Sequence layers (`RNN`, `LSTM`, `GRU`, `MultiheadAttention`, `TransformerEncoderLayer`) read
`(L, N, features)` by default and `(N, L, features)` with `batch_first=True`, as PyTorch. An
input in the other layout passes the feature check (the features are last either way) and is
only caught where a batch or sequence size must match something else (an initial state, the
key, a mask): there the message says when the shapes fit with the first two axes swapped.
"""


def batch_first_hint(batch_first: bool, fits_swapped: bool) -> str:
    """The clause for a shape error that disappears with axes 0 and 1 of the input swapped:
    "" when it does not."""
    if not fits_swapped:
        return ""
    given, layout = ("(N, L, ...)", "(L, N, ...)") if not batch_first else ("(L, N, ...)",
                                                                             "(N, L, ...)")
    return (f"; these shapes fit if the input is {given} rather than the layer's {layout} "
            f"(batch_first={batch_first}): build the layer with batch_first="
            f"{not batch_first}, or transpose the input")


def features_hint(shape, features: int) -> str:
    """The clause for a feature-size error when another axis of `shape` has the size expected
    on the last one (a channels-first `(N, C, L)` input, say): "" when none has."""
    axes = [axis for axis, size in enumerate(tuple(shape)[:-1]) if size == features]
    if not axes:
        return ""
    return (f"; axis {axes[-1]} of the input has {features}: the features go on the last axis, "
            f"(L, N, {features}) or with batch_first=True (N, L, {features}), so transpose it")
