"""Names of the files `xai_keras.training.train` writes into a run folder, importable without
TensorFlow (the CLI reads them before it loads a model)."""

# Beside model.keras: the class names in class-index order, a JSON list. The CLI reads it, so
# `explain`, `sag` and `explain-dataset` print names, not indices.
CLASS_NAMES_FILE = "class_names.json"
