"""What the machine is and what it is good at; nothing here prints.

Import from the module that holds what you need (this package re-exports nothing):

- `hellogpt.hardware.devices`: device and dtype choice (`choose_device`, `choose_dtype` for training and scoring,
  `choose_decode_dtype` for decoding), autocast, the grad-scaler rule.
- `hellogpt.hardware.readings`: live readings for the dashboard (psutil, NVML), `/proc/cpuinfo` (`cpu_flags`,
  `describe_cpu`) and `describe_hardware` for `hellogpt info`.
- `hellogpt.hardware.peak`: the peak-FLOP/s probe and MFU.
- `hellogpt.hardware.rules`: the measured CPU speed rules (decode dtype, packed bf16 weights, the bf16 width
  threshold for training, read bandwidth), each a short probe cached per machine.
- `hellogpt.hardware.cache`: the JSON cache under `~/.cache/hellogpt` that the probes share.
- `hellogpt.hardware.torch_internals`: the private torch APIs we lean on, one narrow function each, with fallbacks.
"""
