"""Random Forests on the feature vectors (classifier for ``p_fail``, regressor for ``rul``), exported to ONNX.

Raw scikit-learn costs ~10 ms per call for one row; the same trees in onnxruntime cost microseconds, so
serving always goes through the ONNX export (:func:`to_onnx`), and tests check the two agree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class ForestConfig:
    n_estimators: int = 60
    max_depth: int | None = 12  # 0 or None: unbounded (TOML has no null)
    min_samples_leaf: int = 5
    max_features: float | str = 0.5
    max_samples: int | None = 30_000  # bootstrap rows per tree: bounds fit time on long logs
    seed: int = 0
    n_jobs: int = 2

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _params(config: ForestConfig, rows: int) -> dict[str, object]:
    per_tree = config.max_samples if config.max_samples is not None and config.max_samples < rows else None
    return dict(
        n_estimators=config.n_estimators,
        max_depth=config.max_depth or None,
        min_samples_leaf=config.min_samples_leaf,
        max_features=config.max_features,
        max_samples=per_tree,
        random_state=config.seed,
        n_jobs=config.n_jobs,
    )


def fit_classifier(x: np.ndarray, y: np.ndarray, config: ForestConfig):
    """A balanced-class-weight forest for ``p_fail`` (failures are rare rows)."""
    from sklearn.ensemble import RandomForestClassifier

    model = RandomForestClassifier(class_weight="balanced_subsample", **_params(config, len(x)))
    return model.fit(x, y.astype(np.int64))


def fit_regressor(x: np.ndarray, y: np.ndarray, config: ForestConfig):
    """A forest for the (capped) remaining useful life."""
    from sklearn.ensemble import RandomForestRegressor

    return RandomForestRegressor(**_params(config, len(x))).fit(x, y)


def to_onnx(classifier, regressor, n_features: int) -> bytes:
    """Both forests as one ONNX graph: input ``x`` (n, f) float32 -> ``p`` (n,), ``rul`` (n,)."""
    import onnx
    from onnx import TensorProto, compose, helper
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    x_type = [("x", FloatTensorType([None, n_features]))]
    clf = convert_sklearn(
        classifier,
        initial_types=x_type,
        options={id(classifier): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    reg = convert_sklearn(regressor, initial_types=x_type, target_opset={"": 17, "ai.onnx.ml": 3})
    clf = compose.add_prefix(clf, "clf_")
    reg = compose.add_prefix(reg, "reg_")
    graph = helper.make_graph(
        nodes=[
            helper.make_node("Identity", ["x"], ["clf_x"]),
            helper.make_node("Identity", ["x"], ["reg_x"]),
            *clf.graph.node,
            *reg.graph.node,
            helper.make_node("Gather", ["clf_probabilities", "one"], ["p"], axis=1),
            helper.make_node("Flatten", ["reg_variable"], ["rul_2d"], axis=1),
            helper.make_node("Squeeze", ["rul_2d", "one_axis"], ["rul"]),
        ],
        name="forest",
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, n_features])],
        outputs=[
            helper.make_tensor_value_info("p", TensorProto.FLOAT, [None]),
            helper.make_tensor_value_info("rul", TensorProto.FLOAT, [None]),
        ],
        initializer=[
            *clf.graph.initializer,
            *reg.graph.initializer,
            helper.make_tensor("one", TensorProto.INT64, [], [1]),
            helper.make_tensor("one_axis", TensorProto.INT64, [1], [1]),
        ],
    )
    model = helper.make_model(graph, opset_imports=list(clf.opset_import))
    onnx.checker.check_model(model)
    return model.SerializeToString()
