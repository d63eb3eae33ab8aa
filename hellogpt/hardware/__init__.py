"""What the machine is and what it is good at; nothing here prints.

Import from the module that holds what you need (this package re-exports nothing):

- `hellogpt.hardware.devices`: device and dtype choice (`choose_device`, `choose_dtype`: a fixed rule, never a
  timing, for training, scoring and decoding alike), autocast, the grad-scaler rule.
- `hellogpt.hardware.readings`: live readings for the dashboard (psutil, NVML), `/proc/cpuinfo` (`cpu_flags`,
  `describe_cpu`) and `describe_hardware` for `hellogpt info`.
- `hellogpt.hardware.peak`: the peak-FLOP/s probe and MFU.
- `hellogpt.hardware.rules`: the measured CPU speed rules (packed bf16 weights, read bandwidth), a short probe
  cached per machine; speed only, never a dtype.
- `hellogpt.hardware.cache`: the JSON cache under `~/.cache/hellogpt` that the probes share.
- `hellogpt.hardware.torch_internals`: the private torch APIs we lean on, one narrow function each, with fallbacks.
"""
