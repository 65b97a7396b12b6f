"""Synthesis: Verilog export and Yosys (synth, mac_synth), the cell-library, timing, energy and FPGA flows
(flows/), PE arrays, the analytical cost model, the area sweep and its silicon columns."""
