"""Quantization: post-training schemes for the torch backend (ptq), quantization-aware training (qat), and GGUF
export + llama.cpp quantization (gguf). One vocabulary of scheme names is shared by the suite knob
`quantization:`, the factory's QAT recipe, and reports.

torch backend schemes (ptq.TORCH_SCHEMES) and llama.cpp GGUF levels (gguf.LEVELS) are disjoint; asking a backend
for a scheme it has no kernel for raises errors.Unsupported (recorded as `unsupported` with the reason)."""
