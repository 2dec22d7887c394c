"""pixelport evaluation: offline accuracy of a served, exported or in-process model.

The harness (`evaluate`), the predictors it drives (Triton, onnxruntime, PyTorch), reports and
their CLI. It sits above clients, models and export, and imports from all three; the torch-free
building blocks it shares with export's accuracy gate (metrics, dataset readers) live in clients.
"""
