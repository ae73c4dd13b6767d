"""
How a resmon process is run and watched, whatever its role: the config file
and C{RESMON_BROKER} (config.py), systemd's notifications (sdnotify.py) and
the Prometheus exposition of the services' counters (metrics.py). Imports
only the shared modules; C{resmon.tap} and the services use it.
"""
