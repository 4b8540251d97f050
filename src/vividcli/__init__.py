"""vividvr: Vivid-VR video restoration as a command-line media tool."""

__version__ = "0.1.0"
