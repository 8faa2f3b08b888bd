"""Labels, asset-wise splits, RF + LSTM training, ensemble and calibration, evaluation, registry."""
