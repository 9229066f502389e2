"""Export: the frozen backbone, or the linear classifier, as a SavedModel, ONNX, LiteRT or a KerasHub preset.

An export folder holds the inference graph only (no projector, predictor or optimizer state),
with the input normalisation inside it, so callers feed float32 RGB pixels in [0, 255]:

    NAME/saved_model/   signature `serve`: input `images` -> `features` (or `probabilities`, `logits`)
    NAME/model.onnx     opset 17, dynamic batch, same input and output names
    NAME/model*.tflite  `litert` (backbones also quantised: see export.litert)
    NAME/keras_hub/     `keras-hub`, a KerasHub preset of a ResNet backbone (see export.hub_preset)
    NAME/metadata.json  what the folder holds, where it came from, and the parity figures

Each export is checked at export time: the Keras model, the SavedModel and ONNX Runtime
(and the LiteRT interpreter, KerasHub) must agree on a fixed batch of images to 1e-4 of the
feature scale, or nothing is written.

`backbone.export_backbone`, `classifier.export_classifier` and `run.export_run` (a saved run, as
simsiam-export does) are the entry points; `export_folder` writes one folder with the `writers`,
the `parity` checks and the `metadata`, whole (`atomic_folder`). Reading an export back is
`simsiam_keras.saved_run`.
"""
