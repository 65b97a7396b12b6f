"""External silicon flows behind the one tool runner (rtl.yosys.run_tool) and the one cached job runner
(hwmodel.execution.jobs.run_cached): standard-cell mapping (liberty), static timing (opensta), switching energy
(energy), FPGA place and route (nextpnr). hwmodel.synthesis.flows.targets combines them per configuration."""

from rtl.yosys import ToolError


class ToolMissing(ToolError):
    """An external tool is not installed; the message names the package that provides it."""

    def __init__(self, message: str, log_path=None):
        super().__init__(message, log_path)
