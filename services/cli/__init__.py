"""The ``vectorops`` command line: the public gRPC API for operators and scripts.

One module per concern: ``parser`` (arguments), ``settings`` (token and
addresses from flags, environment and config file), ``api`` (channels and
stubs), ``output`` (tables and JSON), ``progress`` (the watch display),
``errors`` (gRPC failures → messages and exit codes), and ``commands/`` with
one module per noun.
"""
