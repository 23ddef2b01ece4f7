"""Fast paths: Triton kernels (GPU; CPU through TRITON_INTERPRET=1) and the channels-first
tiled building blocks for Core ML / Apple Neural Engine. Nothing here is imported by the zoo
until a fast path is called."""
