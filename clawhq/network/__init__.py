"""The host firewall that keeps agents away from the host and the networks around it."""
