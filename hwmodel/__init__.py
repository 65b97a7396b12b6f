"""hwmodel: Verilog export, Yosys synthesis to gates/GE/FPGA resources, sweeps and the ``hwmodel`` CLI."""
