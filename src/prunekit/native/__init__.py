"""The compiled pieces (C++ kernels and the calibration memory pool), built into one extension that ``run/`` and
``oneshot/`` both load."""
