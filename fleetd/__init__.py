"""fleetd: keep a fleet of Kubernetes clusters equal to what a git repository says."""

__version__ = "0.1.0"
