"""What the machine is and what it is good at; nothing here prints.

Import from the module that holds what you need (this package re-exports nothing):

- `hellogpt.hardware.devices`: device and dtype choice (`choose_device`, `choose_dtype`: a fixed rule, never a
  timing, for training, scoring and decoding alike), autocast, the grad-scaler rule.
- `hellogpt.hardware.readings`: live readings for the dashboard (psutil, NVML) and `/proc/cpuinfo` (`cpu_flags`,
  `describe_cpu`).
- `hellogpt.hardware.probes`: every speed probe (bf16 packing, MFU peak, decode threads, server row layout), one
  timing harness, one cache, and `system.measure: off` that keeps them all to fixed rules; speed only, never a dtype.
- `hellogpt.hardware.report`: `describe_hardware`, the report of `hellogpt info` (above the others: no circle).
- `hellogpt.hardware.torch_internals`: the private torch APIs we lean on, one narrow function each, with fallbacks.
"""
