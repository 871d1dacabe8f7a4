"""tidlc.frontends.onnx package."""
