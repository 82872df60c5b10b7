"""The shared kernel: settings, module specs, the call wrapper, databases, events, tasks, HTTP.

It holds mechanics only: no module logic and no module imports.
"""
