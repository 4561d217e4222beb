"""`model-selector build`: export the backbone, embed, train the classifier and the selectors, write
the ONNX graphs and the model repository. Never imports serve or measure."""
