"""Reading networks and properties from files other people wrote: ONNX models (:mod:`.onnx`) and VNN-LIB
properties (:mod:`.vnnlib`).  Untrusted files are parsed, never unpickled."""
