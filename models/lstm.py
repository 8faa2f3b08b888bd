"""The LSTM on the last ``T`` feature vectors of an asset, with two heads (``p_fail``, ``rul``).

Training uses Keras 3 on TensorFlow (seeded, early stopping on the validation assets, losses that skip
unknown labels). Serving does not need TensorFlow: :func:`to_onnx` writes the trained weights into an
ONNX graph (centring, one ``LSTM`` operator with the scaling folded into its input weights, the dense
heads) that onnxruntime runs in microseconds (tf2onnx is not available here; the graph is small enough
to build directly, and a test checks it agrees with Keras). ``docs/benchmarks.md`` compares it with a
compiled ``tf.function``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from types import ModuleType

import numpy as np


@dataclass(frozen=True, slots=True)
class LSTMConfig:
    seq_len: int = 20
    units: int = 32  # inference cost grows with seq_len x (features + units) x units: sized for >= 50k rows/s
    dense: int = 16
    dropout: float = 0.1
    epochs: int = 15
    batch_size: int = 256
    learning_rate: float = 2e-3
    patience: int = 3
    max_sequences: int = 30_000  # training windows per epoch (sampled, seeded): bounds memory and time
    seed: int = 0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class LSTMWeights:
    """Everything the ONNX export needs: standardisation and the layers' weights."""

    mean: np.ndarray
    scale: np.ndarray
    kernel: np.ndarray  # (f, 4H), Keras gate order i, f, c, o
    recurrent: np.ndarray  # (H, 4H)
    bias: np.ndarray  # (4H,)
    dense_w: np.ndarray
    dense_b: np.ndarray
    p_w: np.ndarray
    p_b: np.ndarray
    rul_w: np.ndarray
    rul_b: np.ndarray
    rul_cap: float


def tensorflow() -> ModuleType:
    """TensorFlow, imported without its C++ start-up lines on a CPU-only machine ("Could not find cuda
    drivers", "failed call to cuInit", CPU instruction notes: alarming and useless to a first-time user
    of ``motorwatch demo``). Its C++ log level defaults to errors-only-fatal (``TF_CPP_MIN_LOG_LEVEL``
    set by the user wins); what it prints while importing is shown only if the import fails."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)  # the C++ side writes to the file descriptor, not to sys.stderr
        try:
            import tensorflow as tf
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    return tf


def _masked_bce(pos_weight: float):
    from keras import ops

    def loss(y_true, y_pred):
        known = ops.logical_not(ops.isnan(y_true))
        y = ops.where(known, y_true, 0.0)
        p = ops.clip(y_pred, 1e-6, 1 - 1e-6)
        ll = -(pos_weight * y * ops.log(p) + (1 - y) * ops.log(1 - p))
        m = ops.cast(known, "float32")
        return ops.sum(ll * m) / ops.maximum(ops.sum(m), 1.0)

    return loss


def _masked_mse(y_true, y_pred):
    from keras import ops

    known = ops.logical_not(ops.isnan(y_true))
    err = ops.where(known, y_true - y_pred, 0.0)
    m = ops.cast(known, "float32")
    return ops.sum(err * err) / ops.maximum(ops.sum(m), 1.0)


def build(n_features: int, config: LSTMConfig, mean: np.ndarray, scale: np.ndarray):
    """The Keras model: standardise -> LSTM -> dense -> (p in [0, 1], rul / cap)."""
    tensorflow()
    import keras
    from keras import layers

    inp = keras.Input((config.seq_len, n_features), name="seq")
    x = layers.Normalization(mean=mean, variance=scale**2, name="standardise")(inp)
    x = layers.LSTM(config.units, name="lstm")(x)
    x = layers.Dropout(config.dropout, seed=config.seed)(x)
    x = layers.Dense(config.dense, activation="relu", name="dense")(x)
    p = layers.Dense(1, activation="sigmoid", name="p")(x)
    rul = layers.Dense(1, name="rul")(x)
    return keras.Model(inp, {"p": p, "rul": rul})


def fit(
    values: np.ndarray,
    train_index: np.ndarray,
    train_p: np.ndarray,
    train_rul: np.ndarray,
    val_index: np.ndarray,
    val_p: np.ndarray,
    val_rul: np.ndarray,
    rul_cap: float,
    config: LSTMConfig,
    verbose: int = 0,
) -> tuple[LSTMWeights, dict[str, object]]:
    """Train on windows ``values[train_index]`` ((n, T) indices into the frame); early-stop on validation.

    Labels: ``p`` in {0, 1, NaN}, ``rul`` in RUL units or NaN (unknown: excluded from that head's loss).
    Returns the weights and a history summary (epochs run, best validation loss).
    """
    tf = tensorflow()
    import keras

    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    rows = np.unique(train_index)
    finite = values[rows]
    mean = np.nanmean(finite, axis=0).astype(np.float32)
    scale = np.nanstd(finite, axis=0).astype(np.float32)
    scale = np.where(scale > 1e-6, scale, 1.0).astype(np.float32)
    known = ~np.isnan(train_p)
    positives = float(np.nansum(train_p))
    pos_weight = float(np.clip((known.sum() - positives) / max(positives, 1.0), 1.0, 50.0))

    model = build(values.shape[1], config, mean, scale)
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate, clipnorm=1.0),
        loss={"p": _masked_bce(pos_weight), "rul": _masked_mse},
        jit_compile=False,
    )
    seqs = _dataset(values, train_index, train_p, train_rul / rul_cap, config, shuffle=True)
    val = _dataset(values, val_index, val_p, val_rul / rul_cap, config, shuffle=False)
    stop = keras.callbacks.EarlyStopping(patience=config.patience, restore_best_weights=True)
    hist = model.fit(
        seqs, validation_data=val, epochs=config.epochs, callbacks=[stop], verbose=verbose, shuffle=False
    )  # the dataset shuffles itself, seeded
    lstm = model.get_layer("lstm")
    kernel, recurrent, bias = (w.astype(np.float32) for w in lstm.get_weights())
    dw, db = model.get_layer("dense").get_weights()
    pw, pb = model.get_layer("p").get_weights()
    rw, rb = model.get_layer("rul").get_weights()
    weights = LSTMWeights(mean, scale, kernel, recurrent, bias, dw, db, pw, pb, rw, rb, float(rul_cap))
    losses = hist.history.get("val_loss", [float("nan")])
    return weights, {
        "epochs_run": len(losses),
        "best_val_loss": float(np.nanmin(losses)),
        "pos_weight": pos_weight,
    }


def _dataset(values, index, p, rul, config: LSTMConfig, shuffle: bool):
    """A ``tf.data`` pipeline gathering windows by index, so memory holds one batch of windows at a time."""
    tf = tensorflow()

    table = tf.constant(values.astype(np.float32))
    ds = tf.data.Dataset.from_tensor_slices(
        (index.astype(np.int64), {"p": p.astype(np.float32)[:, None], "rul": rul.astype(np.float32)[:, None]})
    )
    if shuffle:
        ds = ds.shuffle(len(index), seed=config.seed, reshuffle_each_iteration=True)
    ds = ds.batch(config.batch_size).map(lambda i, y: (tf.gather(table, i), y))
    return ds.prefetch(2)


def keras_model(weights: LSTMWeights, config: LSTMConfig):
    """A Keras model carrying ``weights`` (for the parity test and the tf.function benchmark)."""
    model = build(weights.kernel.shape[0], config, weights.mean, weights.scale)
    model.get_layer("lstm").set_weights([weights.kernel, weights.recurrent, weights.bias])
    model.get_layer("dense").set_weights([weights.dense_w, weights.dense_b])
    model.get_layer("p").set_weights([weights.p_w, weights.p_b])
    model.get_layer("rul").set_weights([weights.rul_w, weights.rul_b])
    return model


def _onnx_gates(a: np.ndarray, hidden: int) -> np.ndarray:
    """Reorder the last axis from Keras gate order (i, f, c, o) to ONNX's (i, o, f, c)."""
    i, f, c, o = (a[..., k * hidden : (k + 1) * hidden] for k in range(4))
    return np.concatenate([i, o, f, c], axis=-1)


def to_onnx(weights: LSTMWeights, seq_len: int) -> bytes:
    """The network as ONNX: input ``seq`` (n, T, f) float32 -> ``p`` (n,), ``rul`` (n,) in RUL units."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n_features = weights.kernel.shape[0]
    hidden = weights.recurrent.shape[0]
    # The scale is folded into the input weights, W((x - mean) / scale) = (W / scale)(x - mean): one pass
    # less over the (n, T, f) input per call. The mean is not: (W / scale) x - (W / scale) mean cancels
    # catastrophically in float32 where a feature's offset dwarfs its spread (C-MAPSS sensor means sit
    # ~25,000 spreads from zero: 0.7 cycles of RUL error), while x - mean is exact enough.
    kernel = weights.kernel.astype(np.float64) / weights.scale.astype(np.float64)[:, None]
    w = _onnx_gates(kernel, hidden).T[None]  # (1, 4H, f)
    r = _onnx_gates(weights.recurrent, hidden).T[None]  # (1, 4H, H)
    b = np.concatenate([_onnx_gates(weights.bias, hidden), np.zeros(4 * hidden, np.float32)])[None]

    def const(name: str, arr: np.ndarray):
        return numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name)

    inits = [
        const("mean", weights.mean),
        const("W", w),
        const("R", r),
        const("B", b),
        const("dense_w", weights.dense_w),
        const("dense_b", weights.dense_b),
        const("p_w", weights.p_w),
        const("p_b", weights.p_b),
        const("rul_w", weights.rul_w * weights.rul_cap),
        const("rul_b", weights.rul_b * weights.rul_cap),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "axis0"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
    ]
    nodes = [
        helper.make_node("Sub", ["seq", "mean"], ["centred"]),
        helper.make_node("Transpose", ["centred"], ["z_tnf"], perm=[1, 0, 2]),
        helper.make_node("LSTM", ["z_tnf", "W", "R", "B"], ["", "h_last"], hidden_size=hidden),
        helper.make_node("Squeeze", ["h_last", "axis0"], ["h"]),
        helper.make_node("MatMul", ["h", "dense_w"], ["d0"]),
        helper.make_node("Add", ["d0", "dense_b"], ["d1"]),
        helper.make_node("Relu", ["d1"], ["d"]),
        helper.make_node("MatMul", ["d", "p_w"], ["p0"]),
        helper.make_node("Add", ["p0", "p_b"], ["p1"]),
        helper.make_node("Sigmoid", ["p1"], ["p2"]),
        helper.make_node("Squeeze", ["p2", "axis1"], ["p"]),
        helper.make_node("MatMul", ["d", "rul_w"], ["r0"]),
        helper.make_node("Add", ["r0", "rul_b"], ["r1"]),
        helper.make_node("Squeeze", ["r1", "axis1"], ["rul"]),
    ]
    graph = helper.make_graph(
        nodes,
        "lstm",
        [helper.make_tensor_value_info("seq", TensorProto.FLOAT, [None, seq_len, n_features])],
        [
            helper.make_tensor_value_info("p", TensorProto.FLOAT, [None]),
            helper.make_tensor_value_info("rul", TensorProto.FLOAT, [None]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def stateful_graphs(lstm_onnx: bytes) -> tuple[bytes, bytes]:
    """Two graphs derived from :func:`to_onnx`'s that score a sequence in two parts, exactly as it does.

    - ``with_state``: ``seq`` (n, T, f) -> ``p``, ``rul`` and the LSTM's memory after the first
      ``T - 1`` vectors, ``state_h`` and ``state_c`` (n, H): the LSTM operator split into a run over
      those vectors and one step from there (the same arithmetic, so the same bits).
    - ``step``: ``x`` (n, f), ``state_h``, ``state_c`` -> ``p``, ``rul``: that last step alone, a
      ``T``-th of the recurrent work.

    A scorer whose assets' histories change less often than their vectors arrive (1 Hz readings,
    a model trained on 5-minute logs) runs ``with_state`` once per history and ``step`` per vector."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load_from_string(lstm_onnx)
    graph = model.graph
    nodes = list(graph.node)
    (at,) = [i for i, n in enumerate(nodes) if n.op_type == "LSTM"]
    lstm, before, after = nodes[at], nodes[:at], nodes[at + 1 :]
    (seq_in,) = graph.input
    seq_len, n_features = (d.dim_value for d in seq_in.type.tensor_type.shape.dim[1:])
    hidden = next(a.i for a in lstm.attribute if a.name == "hidden_size")
    x_name, h_name = lstm.input[0], lstm.output[1]
    lstm_inputs = list(lstm.input[:4])
    axis0 = numpy_helper.from_array(np.array([0], dtype=np.int64), "state_axis0")
    states = [  # with_state's extra outputs, step's extra inputs
        helper.make_tensor_value_info(s, TensorProto.FLOAT, [None, hidden]) for s in ("state_h", "state_c")
    ]

    def make(name: str, inputs: list, nodes: list, outputs: list, inits: list) -> bytes:
        g = helper.make_graph(nodes, name, inputs, list(graph.output) + outputs, [*graph.initializer, *inits])
        m = helper.make_model(g, opset_imports=list(model.opset_import))
        onnx.checker.check_model(m)
        return m.SerializeToString()

    cut = numpy_helper.from_array(np.array([seq_len - 1, 1], dtype=np.int64), "state_cut")
    with_state = make(
        "lstm_with_state",
        [seq_in],
        [
            *before,
            helper.make_node("Split", [x_name, "state_cut"], ["x_first", "x_last"], axis=0),
            helper.make_node(
                "LSTM", ["x_first", *lstm_inputs[1:]], ["", "h_first", "c_first"], hidden_size=hidden
            ),
            helper.make_node(
                "LSTM",
                ["x_last", *lstm_inputs[1:], "", "h_first", "c_first"],
                ["", h_name],
                hidden_size=hidden,
            ),
            helper.make_node("Squeeze", ["h_first", "state_axis0"], ["state_h"]),
            helper.make_node("Squeeze", ["c_first", "state_axis0"], ["state_c"]),
            *after,
        ],
        states,
        [cut, axis0],
    )
    # The step graph feeds x as a sequence of one through the same preprocessing nodes.
    step = make(
        "lstm_step",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, n_features]),
            *states,
        ],
        [
            helper.make_node("Unsqueeze", ["x", "state_axis1"], [seq_in.name]),
            helper.make_node("Unsqueeze", ["state_h", "state_axis0"], ["h0"]),
            helper.make_node("Unsqueeze", ["state_c", "state_axis0"], ["c0"]),
            *before,
            helper.make_node("LSTM", [*lstm_inputs, "", "h0", "c0"], ["", h_name], hidden_size=hidden),
            *after,
        ],
        [],
        [axis0, numpy_helper.from_array(np.array([1], dtype=np.int64), "state_axis1")],
    )
    return with_state, step
