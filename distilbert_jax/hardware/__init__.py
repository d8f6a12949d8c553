"""Cloud TPU and GPU targets: chips, ahead-of-time compiles and their report, HLO statistics, FLOPs."""
